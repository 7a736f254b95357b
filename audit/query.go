package audit

import "time"

// MaxQueryLimit bounds one page of GET /admin/v1/audit.
const MaxQueryLimit = 1000

// Query selects events, newest first. Zero fields do not filter.
type Query struct {
	TeamID string
	KeyID  string
	UserID string
	Since  time.Time // inclusive
	Until  time.Time // exclusive
	Limit  int       // 1..MaxQueryLimit; 0 means 100
	Cursor string    // opaque, from Page.NextCursor
}

// Page is one page of a query; NextCursor is nil on the last page.
type Page struct {
	Events     []Event `json:"events"`
	NextCursor *string `json:"next_cursor"`
}
