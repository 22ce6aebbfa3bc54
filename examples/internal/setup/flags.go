package setup

import "strings"

// Multi is a repeatable string flag; with Split set, a comma-separated
// value counts as several.
type Multi struct {
	Vals  []string
	Split bool
}

func (m *Multi) String() string { return strings.Join(m.Vals, ",") }

// Set adds s (or its comma-separated parts, without empty ones).
func (m *Multi) Set(s string) error {
	if !m.Split {
		m.Vals = append(m.Vals, s)
		return nil
	}
	for v := range strings.SplitSeq(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			m.Vals = append(m.Vals, v)
		}
	}
	return nil
}
