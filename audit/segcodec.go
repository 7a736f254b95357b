package audit

import (
	"encoding/binary"
	"errors"
	"math"
	"time"

	"github.com/wevion/keyproxy/internal/pace"
)

// A segment is one stored batch of events in SQLite. Rows of 17 columns
// cost a B-tree insert per event and per index; a segment costs one blob
// per batch, and its strings (key, user, team, path, agent...) repeat so
// much that a per-segment string table makes an event about 100 bytes.
//
// Format, version 1 (all integers varints):
//
//	version byte
//	strings: count, then each as length and bytes (index 0 is "", not stored)
//	events:  count, then each as
//	         time (µs, zigzag delta from the previous event; the first from 0),
//	         id and request_id, unique, so not in the table but front-coded
//	         against the previous event's: shared prefix length, then the
//	         rest as length and bytes (ids made in the same millisecond, or
//	         by the same process, share most of their bytes),
//	         12 string-table indexes (refFields order), status (zigzag),
//	         duration_ms (8 bytes, IEEE 754 little-endian)
const segmentVersion = 1

// The string fields an event keeps in the table, in the format's order.
// These numbers are stored (the order of a segment's indexes, and the kind
// column of audit_refs): never reorder; a new field needs a new segmentVersion.
const (
	refType = iota
	refKeyID
	refKeyStart
	refUserID
	refTeamID
	refRole
	refActor
	refMethod
	refPath
	refClientIP
	refUserAgent
	refOutcome
	numRefs
)

var errCorruptSegment = errors.New("audit: corrupt segment")

func refFields(e *Event) [numRefs]*string {
	return [numRefs]*string{&e.Type, &e.KeyID, &e.KeyStart, &e.UserID, &e.TeamID, &e.Role, &e.Actor,
		&e.Method, &e.Path, &e.ClientIP, &e.UserAgent, &e.Outcome}
}

// segmentEncoder is reused from batch to batch so that its table, map and
// buffers stop allocating once warm.
type segmentEncoder struct {
	index  map[string]uint64
	strs   []string
	kinds  []uint8 // per table entry: bit k set when a refKinds field k holds it
	events []byte
	out    []byte
	// Consecutive events mostly repeat a field (one key's calls, constant
	// types and methods): comparing with the last value spares the map.
	last    [numRefs]string
	lastIdx [numRefs]uint64
}

func newSegmentEncoder() *segmentEncoder {
	return &segmentEncoder{index: make(map[string]uint64)}
}

// encode returns the segment of batch; the result is valid until the next
// call. y, when not nil, paces the encoding between events.
func (enc *segmentEncoder) encode(batch []Event, y *pace.Pacer) []byte {
	clear(enc.index)
	enc.strs, enc.kinds = enc.strs[:0], enc.kinds[:0]
	enc.last, enc.lastIdx = [numRefs]string{}, [numRefs]uint64{}
	b := binary.AppendUvarint(enc.events[:0], uint64(len(batch)))
	var (
		prev            int64
		prevID, prevReq string
	)
	for i := range batch {
		e := &batch[i]
		t := e.Time.UnixMicro()
		b = binary.AppendVarint(b, t-prev)
		prev = t
		b = appendFront(b, prevID, e.ID)
		b = appendFront(b, prevReq, e.RequestID)
		prevID, prevReq = e.ID, e.RequestID
		for k, f := range refFields(e) {
			b = binary.AppendUvarint(b, enc.ref(k, *f))
		}
		b = binary.AppendVarint(b, int64(e.Status))
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(e.DurationMS))
		y.Step()
	}
	enc.events = b

	out := append(enc.out[:0], segmentVersion)
	out = binary.AppendUvarint(out, uint64(len(enc.strs)))
	for _, s := range enc.strs {
		out = appendBytes(out, s)
	}
	enc.out = append(out, b...)
	return enc.out
}

func (enc *segmentEncoder) ref(field int, s string) uint64 {
	if s == "" {
		return 0
	}
	if s == enc.last[field] {
		return enc.lastIdx[field]
	}
	i, ok := enc.index[s]
	if !ok {
		enc.strs = append(enc.strs, s)
		enc.kinds = append(enc.kinds, 0)
		i = uint64(len(enc.strs))
		enc.index[s] = i
	}
	for bit, kind := range refKinds {
		if kind == field {
			enc.kinds[i-1] |= 1 << bit
		}
	}
	enc.last[field], enc.lastIdx[field] = s, i
	return i
}

// refs calls fn with each filterable (kind, id) of the last encoded batch, once.
func (enc *segmentEncoder) refs(fn func(kind int, value string)) {
	for i, s := range enc.strs {
		for bit, kind := range refKinds {
			if enc.kinds[i]&(1<<bit) != 0 {
				fn(kind, s)
			}
		}
	}
}

func appendBytes(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

func appendFront(b []byte, prev, s string) []byte {
	n := 0
	for n < len(prev) && n < len(s) && prev[n] == s[n] {
		n++
	}
	return appendBytes(binary.AppendUvarint(b, uint64(n)), s[n:])
}

// segmentReader walks a segment without copying: filters compare table
// indexes, and only the events a query keeps become Events.
type segmentReader struct {
	table [][]byte // table[0] is ""
	strs  []string // table entries made into strings, on first use
	data  []byte   // the events still to read
	left  uint64
	prev  int64
	id    []byte // the previous event's id and request id: front coding's base
	reqID []byte
}

// rawEvent is an event as read: byte slices into the segment, and indexes.
type rawEvent struct {
	micros    int64
	id, reqID []byte
	refs      [numRefs]uint64
	status    int64
	duration  float64
}

func readSegment(data []byte) (*segmentReader, error) {
	if len(data) == 0 || data[0] != segmentVersion {
		return nil, errCorruptSegment
	}
	r := &segmentReader{data: data[1:]}
	n, ok := r.uvarint()
	if !ok || n > uint64(len(r.data)) {
		return nil, errCorruptSegment
	}
	r.table = make([][]byte, 1, n+1)
	for range n {
		s, ok := r.bytes()
		if !ok {
			return nil, errCorruptSegment
		}
		r.table = append(r.table, s)
	}
	r.strs = make([]string, len(r.table))
	if r.left, ok = r.uvarint(); !ok || r.left > uint64(len(r.data)) {
		return nil, errCorruptSegment
	}
	return r, nil
}

// lookup returns s's table index, or -1 when no event of the segment has it.
func (r *segmentReader) lookup(s string) int64 {
	if s == "" {
		return 0
	}
	for i := 1; i < len(r.table); i++ {
		if string(r.table[i]) == s {
			return int64(i)
		}
	}
	return -1
}

// next reads the next event into ev; it returns false at the end, and an
// error when the segment is damaged.
func (r *segmentReader) next(ev *rawEvent) (bool, error) {
	if r.left == 0 {
		if len(r.data) != 0 {
			return false, errCorruptSegment
		}
		return false, nil
	}
	r.left--
	d, ok := r.varint()
	if !ok {
		return false, errCorruptSegment
	}
	r.prev += d
	ev.micros = r.prev
	if r.id, ok = r.front(r.id); !ok {
		return false, errCorruptSegment
	}
	if r.reqID, ok = r.front(r.reqID); !ok {
		return false, errCorruptSegment
	}
	ev.id, ev.reqID = r.id, r.reqID
	for i := range ev.refs {
		if ev.refs[i], ok = r.uvarint(); !ok || ev.refs[i] >= uint64(len(r.table)) {
			return false, errCorruptSegment
		}
	}
	if ev.status, ok = r.varint(); !ok || ev.status < math.MinInt32 || ev.status > math.MaxInt32 || len(r.data) < 8 {
		return false, errCorruptSegment
	}
	ev.duration = math.Float64frombits(binary.LittleEndian.Uint64(r.data))
	r.data = r.data[8:]
	// The writer stores measured durations only. A NaN or an infinity is
	// damage, and one that JSON cannot carry: the audit query's response
	// would fail to encode (testdata/fuzz/FuzzReadSegment/cd5356ec339d5ff0).
	if math.IsNaN(ev.duration) || math.IsInf(ev.duration, 0) {
		return false, errCorruptSegment
	}
	return true, nil
}

// events reads the rest of the segment and returns the events keep
// accepts (all with a nil keep).
func (r *segmentReader) events(keep func(*rawEvent) bool) ([]Event, error) {
	var (
		out []Event
		ev  rawEvent
	)
	for {
		ok, err := r.next(&ev)
		if err != nil || !ok {
			return out, err
		}
		if keep == nil || keep(&ev) {
			out = append(out, r.event(&ev))
		}
	}
}

// event makes ev an Event; table strings are shared by the events of a segment.
func (r *segmentReader) event(ev *rawEvent) Event {
	e := Event{
		ID:         string(ev.id),
		Time:       time.UnixMicro(ev.micros).UTC(),
		RequestID:  string(ev.reqID),
		Status:     int(ev.status),
		DurationMS: ev.duration,
	}
	for i, f := range refFields(&e) {
		*f = r.str(ev.refs[i])
	}
	return e
}

func (r *segmentReader) str(i uint64) string {
	if r.strs[i] == "" && len(r.table[i]) > 0 {
		r.strs[i] = string(r.table[i])
	}
	return r.strs[i]
}

func (r *segmentReader) uvarint() (uint64, bool) {
	v, n := binary.Uvarint(r.data)
	if n <= 0 {
		return 0, false
	}
	r.data = r.data[n:]
	return v, true
}

func (r *segmentReader) varint() (int64, bool) {
	v, n := binary.Varint(r.data)
	if n <= 0 {
		return 0, false
	}
	r.data = r.data[n:]
	return v, true
}

// front decodes a front-coded value into prev's buffer.
func (r *segmentReader) front(prev []byte) ([]byte, bool) {
	n, ok := r.uvarint()
	if !ok || n > uint64(len(prev)) {
		return nil, false
	}
	rest, ok := r.bytes()
	if !ok {
		return nil, false
	}
	return append(prev[:n], rest...), true
}

func (r *segmentReader) bytes() ([]byte, bool) {
	n, ok := r.uvarint()
	if !ok || n > uint64(len(r.data)) {
		return nil, false
	}
	s := r.data[:n:n]
	r.data = r.data[n:]
	return s, true
}
