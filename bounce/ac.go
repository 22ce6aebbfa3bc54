package bounce

import (
	"fmt"
	"slices"
)

// acMatcher finds which of a fixed set of patterns occur in a text in one
// pass (Aho-Corasick), reading the text as normText would produce it
// without allocating. Bytes are mapped to a small alphabet of classes so
// the transition table stays compact.
type acMatcher struct {
	class   [256]uint8
	nclass  int
	delta   []uint16 // state*nclass + class -> state
	outputs [][]int32
	term    []bool // state has outputs
	nstates int
}

// Patterns must be printable ASCII (Rule.validate checks), so there are at
// most 96 classes.
func newACMatcher(patterns []string) (*acMatcher, error) {
	m := &acMatcher{}
	// Class 0 is "any byte in no pattern". Distinct pattern bytes get a
	// class each; upper case letters share their lower case class.
	seen := map[byte]uint8{}
	m.nclass = 1
	for _, p := range patterns {
		for i := 0; i < len(p); i++ {
			if _, ok := seen[p[i]]; !ok {
				seen[p[i]] = uint8(m.nclass)
				m.nclass++
			}
		}
	}
	for b, c := range seen {
		m.class[b] = c
		if b >= 'a' && b <= 'z' {
			m.class[b-'a'+'A'] = c
		}
	}
	// Trie.
	type node struct {
		next map[uint8]int32
		out  []int32
	}
	nodes := []node{{next: map[uint8]int32{}}}
	for id, p := range patterns {
		s := int32(0)
		for i := 0; i < len(p); i++ {
			c := m.class[p[i]]
			n, ok := nodes[s].next[c]
			if !ok {
				n = int32(len(nodes))
				nodes = append(nodes, node{next: map[uint8]int32{}})
				nodes[s].next[c] = n
			}
			s = n
		}
		nodes[s].out = append(nodes[s].out, int32(id))
	}
	// Number states breadth first, so the shallow states that most input
	// bytes visit share a few cache lines of the table.
	order := []int32{0}
	for i := 0; i < len(order); i++ {
		n := nodes[order[i]]
		for c := 0; c < m.nclass; c++ {
			if nx, ok := n.next[uint8(c)]; ok {
				order = append(order, nx)
			}
		}
	}
	newID := make([]int32, len(nodes))
	for i, old := range order {
		newID[old] = int32(i)
	}
	renum := make([]node, len(nodes))
	for old, n := range nodes {
		next := make(map[uint8]int32, len(n.next))
		for c, nx := range n.next {
			next[c] = newID[nx]
		}
		renum[newID[old]] = node{next: next, out: n.out}
	}
	nodes = renum
	if len(nodes) > termBit {
		return nil, fmt.Errorf("%w: text patterns too long in total (%d trie states, at most %d)", ErrBadRule, len(nodes), termBit)
	}
	// Breadth-first failure links, filling a dense table.
	m.delta = make([]uint16, len(nodes)*m.nclass)
	m.nstates = len(nodes)
	m.outputs = make([][]int32, len(nodes))
	fail := make([]int32, len(nodes))
	queue := []int32{}
	for c := 0; c < m.nclass; c++ {
		if n, ok := nodes[0].next[uint8(c)]; ok {
			m.delta[c] = uint16(n)
			queue = append(queue, n)
		}
	}
	m.outputs[0] = nodes[0].out
	m.term = make([]bool, len(nodes))
	for len(queue) > 0 {
		s := queue[0]
		queue = queue[1:]
		m.outputs[s] = append(slices.Clone(nodes[s].out), m.outputs[fail[s]]...)
		m.term[s] = len(m.outputs[s]) > 0
		for c := 0; c < m.nclass; c++ {
			if n, ok := nodes[s].next[uint8(c)]; ok {
				fail[n] = int32(m.delta[int(fail[s])*m.nclass+c])
				m.delta[int(s)*m.nclass+c] = uint16(n)
				queue = append(queue, n)
			} else {
				m.delta[int(s)*m.nclass+c] = m.delta[int(fail[s])*m.nclass+c]
			}
		}
	}
	// Mark transitions into states with outputs, so the scan needs one
	// table load per byte.
	for i, to := range m.delta {
		if m.term[to] {
			m.delta[i] = to | termBit
		}
	}
	return m, nil
}

// termBit flags a transition into a state that has outputs.
const termBit = 1 << 15

// appendRules scans text and appends, in ascending order, the indices of
// rules (via byPat) that have a pattern occurring in text. Indices may
// repeat.
func (m *acMatcher) appendRules(dst []int, text string, byPat [][]int) []int {
	if len(m.delta) == 0 {
		return dst
	}
	s := 0
	space := true // leading white space is trimmed
	start := len(dst)
	for i := 0; i < len(text); i++ {
		b := text[i]
		if b == ' ' || b == '\t' || b == '\r' || b == '\n' {
			if space {
				continue
			}
			space = true
			b = ' '
		} else {
			space = false
		}
		t := m.delta[s*m.nclass+int(m.class[b])]
		s = int(t &^ termBit)
		if t&termBit != 0 {
			for _, id := range m.outputs[s] {
				dst = append(dst, byPat[id]...)
			}
		}
	}
	slices.Sort(dst[start:])
	return dst
}
