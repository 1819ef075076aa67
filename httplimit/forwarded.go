package httplimit

import (
	"net/http"
	"net/netip"
	"strings"
)

// forwardedFor returns the for= addresses of the Forwarded headers (RFC
// 7239), in order, unmapped. An element whose for= is not an address
// ("unknown", an obfuscated name, none), and a header line that does not
// parse, are each one zero Addr: a malformed entry, which stops ClientIP's
// walk. Lines are parsed apart, so a line a client garbled does not hide
// the lines proxies appended after it.
func forwardedFor(h http.Header) []netip.Addr {
	var out []netip.Addr
	for _, v := range h.Values("Forwarded") {
		vals, ok := parseForwarded(v)
		if !ok {
			out = append(out, netip.Addr{})
			continue
		}
		for _, s := range vals {
			a, _ := parseNode(s)
			out = append(out, a)
		}
	}
	return out
}

// parseForwarded returns the for= value of each element of one Forwarded
// field line ("" for an element without one), unquoted; ok is false when
// the line does not follow the grammar:
//
//	Forwarded = 1#( pair *( ";" pair ) ),  pair = token "=" ( token / quoted-string )
func parseForwarded(v string) (vals []string, ok bool) {
	i := 0
	for {
		i = skipOWS(v, i)
		if i == len(v) {
			return vals, true
		}
		if v[i] == ',' { // an empty list element
			i++
			continue
		}
		forVal, hasFor := "", false
		for {
			i = skipOWS(v, i)
			j := i
			for j < len(v) && isTchar(v[j]) {
				j++
			}
			if j == i || j == len(v) || v[j] != '=' {
				return nil, false
			}
			name := v[i:j]
			i = j + 1
			var val string
			if i < len(v) && v[i] == '"' {
				if val, i, ok = unquote(v, i); !ok {
					return nil, false
				}
			} else {
				j = i
				for j < len(v) && isTchar(v[j]) {
					j++
				}
				if j == i {
					return nil, false
				}
				val, i = v[i:j], j
			}
			if strings.EqualFold(name, "for") {
				if hasFor {
					return nil, false // a parameter given twice
				}
				forVal, hasFor = val, true
			}
			i = skipOWS(v, i)
			if i < len(v) && v[i] == ';' {
				i++
				continue
			}
			break
		}
		vals = append(vals, forVal)
		if i == len(v) {
			return vals, true
		}
		if v[i] != ',' {
			return nil, false
		}
		i++
	}
}

// unquote reads the quoted-string at v[i] (which is '"') and returns its
// content and the index after it.
func unquote(v string, i int) (string, int, bool) {
	var b strings.Builder
	for i++; i < len(v); i++ {
		switch c := v[i]; {
		case c == '"':
			return b.String(), i + 1, true
		case c == '\\':
			i++
			if i == len(v) || !isQuotable(v[i]) {
				return "", 0, false
			}
			b.WriteByte(v[i])
		case isQuotable(c):
			b.WriteByte(c)
		default:
			return "", 0, false
		}
	}
	return "", 0, false
}

// parseNode parses a node of RFC 7239 section 6 as an address: IPv4 or
// "[" IPv6 "]", each with an optional port. "unknown" and obfuscated
// identifiers give the zero Addr.
func parseNode(s string) (netip.Addr, bool) {
	host, port := s, ""
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return netip.Addr{}, false
		}
		host, port = s[1:end], s[end+1:]
		if port != "" {
			if port[0] != ':' {
				return netip.Addr{}, false
			}
			port = port[1:]
		}
	} else if h, p, ok := strings.Cut(s, ":"); ok {
		host, port = h, p
	}
	if port != "" || strings.HasSuffix(s, ":") {
		if !validPort(port) {
			return netip.Addr{}, false
		}
	}
	a, err := netip.ParseAddr(host)
	if err != nil || a.Zone() != "" || (a.Is6() != strings.HasPrefix(s, "[")) {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// validPort reports whether p is a node-port: 1 to 5 digits, or "_" and
// letters, digits, '.', '_' or '-' (an obfuscated port).
func validPort(p string) bool {
	if p == "" {
		return false
	}
	if p[0] == '_' {
		for i := 1; i < len(p); i++ {
			if c := p[i]; !isAlnum(c) && c != '.' && c != '_' && c != '-' {
				return false
			}
		}
		return true
	}
	if len(p) > 5 {
		return false
	}
	for i := 0; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return false
		}
	}
	return true
}

func skipOWS(v string, i int) int {
	for i < len(v) && (v[i] == ' ' || v[i] == '\t') {
		i++
	}
	return i
}

func isAlnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// isTchar reports whether c may appear in an RFC 9110 token.
func isTchar(c byte) bool {
	return isAlnum(c) || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// isQuotable reports whether c may appear in a quoted-string (qdtext or
// after a backslash): HTAB, SP, visible ASCII and obs-text.
func isQuotable(c byte) bool {
	return c == '\t' || c >= 0x20 && c != 0x7f
}
