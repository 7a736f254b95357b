package keystore

// The codecs are unexported; the fuzz targets in keystore_test reach them
// through these.
var (
	DecodeRedisIdentity = decodeRedisIdentity
	EncodeRedisIdentity = encodeRedisIdentity
	DecodeEvict         = decodeEvict
	EncodeEvict         = encodeEvict
	DecodeAck           = decodeAck
	EncodeAck           = encodeAck
)

// Eviction is the decoded eviction message the codecs above take.
type Eviction = eviction
