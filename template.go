package ratesync

import (
	"fmt"
	"strings"
)

// Values maps template placeholders to their values.
type Values map[string]string

// Template is a parsed limiter name with placeholders, such as
// "api:{user_id}" or "api:{tenant_id}:{user_id}". The first segment (before
// the first ':') names the rule; every later segment is one identifier of a
// per-key limiter, made of literal text and {placeholders}. So
// "api:{user_id}" with user_id 7 is the limiter For("api", "7").
//
// A Template is immutable and safe for concurrent use.
type Template struct {
	reg      *Registry
	text     string
	base     string
	segments [][]piece
	names    []string
}

type piece struct {
	text        string
	placeholder bool
}

// Template parses tmpl. The rule need not exist yet: it is looked up when
// the template is resolved.
func (r *Registry) Template(tmpl string) (*Template, error) {
	t := &Template{reg: r, text: tmpl}
	segs := strings.Split(tmpl, ":")
	if strings.ContainsAny(segs[0], "{}") || segs[0] == "" {
		return nil, &ConfigError{Msg: fmt.Sprintf("template %q: the first segment must be the rule name, without placeholders (like \"api:{user_id}\")", tmpl)}
	}
	t.base = segs[0]
	seen := map[string]bool{}
	for _, seg := range segs[1:] {
		var ps []piece
		for rest := seg; rest != ""; {
			open := strings.IndexByte(rest, '{')
			if open < 0 {
				if strings.ContainsRune(rest, '}') {
					return nil, &ConfigError{Msg: fmt.Sprintf("template %q: unmatched '}'", tmpl)}
				}
				ps = append(ps, piece{text: rest})
				break
			}
			if open > 0 {
				if strings.ContainsRune(rest[:open], '}') {
					return nil, &ConfigError{Msg: fmt.Sprintf("template %q: unmatched '}'", tmpl)}
				}
				ps = append(ps, piece{text: rest[:open]})
			}
			end := strings.IndexByte(rest[open:], '}')
			if end < 0 {
				return nil, &ConfigError{Msg: fmt.Sprintf("template %q: unclosed '{'", tmpl)}
			}
			name := rest[open+1 : open+end]
			if !validEnvName(name) {
				return nil, &ConfigError{Msg: fmt.Sprintf("template %q: placeholder {%s} must be a word (letters, digits, _)", tmpl, name)}
			}
			ps = append(ps, piece{text: name, placeholder: true})
			if !seen[name] {
				seen[name] = true
				t.names = append(t.names, name)
			}
			rest = rest[open+end+1:]
		}
		t.segments = append(t.segments, ps)
	}
	return t, nil
}

// Placeholders returns the placeholder names, in order of first use.
func (t *Template) Placeholders() []string { return append([]string(nil), t.names...) }

// String returns the template text.
func (t *Template) String() string { return t.text }

// Resolve resolves the template with values and returns the per-key
// limiter. A placeholder without a value is an error naming it (matching
// ErrMissingValue).
func (t *Template) Resolve(values Values) (*Limiter, error) {
	ids := make([]string, len(t.segments))
	for i, seg := range t.segments {
		var b strings.Builder
		for _, p := range seg {
			if !p.placeholder {
				b.WriteString(p.text)
				continue
			}
			v, ok := values[p.text]
			if !ok {
				return nil, fmt.Errorf("%w: template %q needs a value for {%s} (have %s)", ErrMissingValue, t.text, p.text, listNames(values))
			}
			b.WriteString(v)
		}
		ids[i] = b.String()
	}
	return t.reg.For(t.base, ids...)
}

// Resolve parses tmpl and resolves it with values: Template followed by
// Limiter. Parse templates once with Template when they are used often.
func (r *Registry) Resolve(tmpl string, values Values) (*Limiter, error) {
	t, err := r.Template(tmpl)
	if err != nil {
		return nil, err
	}
	return t.Resolve(values)
}
