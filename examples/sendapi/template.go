package main

import (
	"errors"
	htmltemplate "html/template"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"text/template"
	"text/template/parse"
)

// maxTemplateSteps bounds the work one template may do: the number of
// actions it can execute, counted with every range running as often as
// the longest list or object in the variables. See templateCost.
const maxTemplateSteps = 1_000_000

// renderText executes src as a text/template over vars. A variable the
// template names but vars lack is an error (missingkey=error).
func renderText(field, src string, vars map[string]any, maxOutput int) (string, error) {
	t, err := template.New(field).Option("missingkey=error").Parse(src)
	if err != nil {
		return "", templateError(field, err)
	}
	if err := checkTemplate(field, t.Tree, vars); err != nil {
		return "", err
	}
	return execute(field, maxOutput, func(w io.Writer) error { return t.Execute(w, vars) })
}

// renderHTML is renderText with html/template, which escapes what the
// variables insert according to where in the HTML they go.
func renderHTML(field, src string, vars map[string]any, maxOutput int) (string, error) {
	t, err := htmltemplate.New(field).Option("missingkey=error").Parse(src)
	if err != nil {
		return "", templateError(field, err)
	}
	if err := checkTemplate(field, t.Tree, vars); err != nil {
		return "", err
	}
	return execute(field, maxOutput, func(w io.Writer) error { return t.Execute(w, vars) })
}

func execute(field string, maxOutput int, exec func(io.Writer) error) (string, error) {
	var sb strings.Builder
	lw := &limitWriter{w: &sb, n: maxOutput}
	if err := exec(lw); err != nil {
		if lw.over {
			return "", &apiError{Status: http.StatusRequestEntityTooLarge, Field: field,
				Msg: "rendered output is larger than the limit of " + byteSize(maxOutput)}
		}
		return "", templateError(field, err)
	}
	return sb.String(), nil
}

var missingKey = regexp.MustCompile(`map has no entry for key "((?:[^"\\]|\\.)*)"`)

// templateError turns a parse or execution error into a 422 for field,
// naming the variable when one was missing.
func templateError(field string, err error) error {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	msg := err.Error()
	if m := missingKey.FindStringSubmatch(msg); m != nil {
		return invalid(field, "missing variable %q (%s)", m[1], msg)
	}
	return invalid(field, "template: %s", strings.TrimPrefix(msg, "template: "))
}

// checkTemplate refuses templates whose running time the variables do not
// bound. Output is capped by limitWriter, but a template can also loop
// without writing: {{range 1000000000}}{{end}}, nested ranges over one
// long list, or a {{template}} that calls itself. So: no {{template}} or
// {{block}} calls, range only over a variable's field (.items, $.items,
// $x.items; those hold JSON values, never numbers to count to, as the
// request decoder keeps JSON numbers as json.Number strings), and the
// statically counted work, with every
// range taken to iterate as often as the longest list or object in vars,
// must stay under maxTemplateSteps.
func checkTemplate(field string, tree *parse.Tree, vars map[string]any) error {
	if tree == nil || tree.Root == nil {
		return nil
	}
	maxLen := longest(vars)
	cost, err := templateCost(tree.Root, maxLen)
	if err != nil {
		return invalid(field, "%v", err)
	}
	if cost > maxTemplateSteps {
		return invalid(field, "template too costly for these variables (nested range over lists of up to %d items)", maxLen)
	}
	return nil
}

// templateCost counts the actions n executes at most, saturating just
// above maxTemplateSteps.
func templateCost(n parse.Node, maxLen int) (int, error) {
	sum := func(nodes ...*parse.ListNode) (int, error) {
		total := 0
		for _, l := range nodes {
			if l == nil {
				continue
			}
			for _, c := range l.Nodes {
				k, err := templateCost(c, maxLen)
				if err != nil {
					return 0, err
				}
				total = min(total+k, maxTemplateSteps+1)
			}
		}
		return total, nil
	}
	switch n := n.(type) {
	case *parse.ListNode:
		return sum(n)
	case *parse.TemplateNode:
		return 0, errors.New("{{template}} and {{block}} are not supported")
	case *parse.IfNode:
		k, err := sum(n.List, n.ElseList)
		return min(k+1, maxTemplateSteps+1), err
	case *parse.WithNode:
		k, err := sum(n.List, n.ElseList)
		return min(k+1, maxTemplateSteps+1), err
	case *parse.RangeNode:
		if !rangeOverField(n.Pipe) {
			return 0, errors.New("range works only over a field of the variables, such as {{range .items}} or {{range $.items}}")
		}
		body, err := sum(n.List)
		if err != nil {
			return 0, err
		}
		els, err := sum(n.ElseList)
		if err != nil {
			return 0, err
		}
		if body+1 > (maxTemplateSteps+1)/max(maxLen, 1) {
			return maxTemplateSteps + 1, nil
		}
		return min(maxLen*(body+1)+els+1, maxTemplateSteps+1), nil
	}
	return 1, nil
}

// rangeOverField reports whether a range pipeline is a single field
// reference: .a.b, or $.a / $x.a.
func rangeOverField(p *parse.PipeNode) bool {
	if p == nil || len(p.Cmds) != 1 || len(p.Cmds[0].Args) != 1 {
		return false
	}
	switch a := p.Cmds[0].Args[0].(type) {
	case *parse.FieldNode:
		return true
	case *parse.VariableNode:
		return len(a.Ident) > 1
	}
	return false
}

// longest returns the length of the longest list or object in v.
func longest(v any) int {
	n := 0
	switch v := v.(type) {
	case map[string]any:
		n = len(v)
		for _, e := range v {
			n = max(n, longest(e))
		}
	case []any:
		n = len(v)
		for _, e := range v {
			n = max(n, longest(e))
		}
	}
	return n
}

// limitWriter passes at most n bytes to w and then fails.
type limitWriter struct {
	w    io.Writer
	n    int
	over bool
}

var errOutputLimit = errors.New("output limit reached")

func (l *limitWriter) Write(p []byte) (int, error) {
	if len(p) > l.n {
		l.over = true
		return 0, errOutputLimit
	}
	l.n -= len(p)
	return l.w.Write(p)
}

func byteSize(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.Itoa(n>>20) + " MiB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return strconv.Itoa(n>>10) + " KiB"
	}
	return strconv.Itoa(n) + " bytes"
}
