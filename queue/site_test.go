package queue

import (
	"maps"
	"slices"
	"testing"
)

// The inverted index of sites must follow a domain that moves to another
// site, and drop sites left without domains.
func TestLearnSite(t *testing.T) {
	q := &Queue{siteOf: map[string]string{}, siteDoms: map[string]map[string]struct{}{}}
	q.learnSite("a.test", "mx1")
	q.learnSite("b.test", "mx1")
	q.learnSite("a.test", "mx1")
	q.learnSite("c.test", "mx2")
	q.learnSite("a.test", "mx2")
	q.learnSite("b.test", "mx3")
	got := map[string][]string{}
	for site, doms := range q.siteDoms {
		got[site] = slices.Sorted(maps.Keys(doms))
	}
	want := map[string][]string{"mx2": {"a.test", "c.test"}, "mx3": {"b.test"}}
	if len(got) != len(want) || !slices.Equal(got["mx2"], want["mx2"]) || !slices.Equal(got["mx3"], want["mx3"]) {
		t.Errorf("sites %v, want %v", got, want)
	}
	for d, site := range q.siteOf {
		if _, ok := q.siteDoms[site][d]; !ok {
			t.Errorf("%s is at %s, but that site does not list it", d, site)
		}
	}
}
