// Package strictjson checks that a JSON document reads the same to every
// reader: no key twice, struct fields named exactly. provision's
// DecodeData calls it on every workload.
package strictjson

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// Check closes the two places where encoding/json reads a document
// differently from a strict reader: it lets the last of duplicate keys win,
// and it matches struct field names case-insensitively. Either way a reader
// with other rules (first wins, exact names) would show the user another
// workload than the one the node runs, under the same signature.
//
// It walks data, which must be one valid JSON value (DecodeData has decoded
// it already), once, guided by t, the type data was decoded into. Every
// object must hold each key once (compared after unescaping, as
// encoding/json compares them); an object decoded into a struct may hold
// only the exact JSON names of its fields. Map keys may differ only in case;
// they are compared as strings, which is exact for maps with string keys
// (the only ones in the workloads: "1" and "01" would be two keys of a
// map[int]T). Below a json.Unmarshaler, a json.RawMessage or an
// interface, only duplicates are looked for.
func Check(data []byte, t reflect.Type) error {
	w := keyWalker{data: data}
	return w.value(t)
}

// keyError is a key Check refuses.
type keyError struct {
	key  string
	path string // of the object holding key: "", "env", "mounts[1]"
	dup  bool   // key occurs twice; else it names no field exactly
	want string // the field key case-folds to, if any
}

func (e *keyError) Error() string {
	where := ""
	if e.path != "" {
		where = " in " + e.path
	}
	switch {
	case e.dup:
		return fmt.Sprintf("duplicate key %q%s", e.key, where)
	case e.want != "":
		return fmt.Sprintf("field %q%s: use %q (field names are case-sensitive)", e.key, where, e.want)
	}
	return fmt.Sprintf("unknown field %q%s", e.key, where)
}

// within prefixes the error's path with the key or index of the value it
// was found in.
func within(err error, seg string) error {
	if e, ok := err.(*keyError); ok {
		if e.path != "" && e.path[0] != '[' {
			seg += "."
		}
		e.path = seg + e.path
	}
	return err
}

// pathKey is key as a path segment: as is when it is a plain name.
func pathKey(key string) string {
	for i := 0; i < len(key); i++ {
		if c := key[i]; !(c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || i > 0 && '0' <= c && c <= '9') {
			return "[" + strconv.Quote(key) + "]"
		}
	}
	if key == "" {
		return `[""]`
	}
	return key
}

// shape is what Check needs to know of a type.
type shape struct {
	fields map[string]reflect.Type // struct: JSON field name to field type; nil otherwise
	names  []string                // struct: the JSON field names, in order
	elem   reflect.Type            // map value or slice element; nil: only look for duplicates
}

var (
	shapes        sync.Map // reflect.Type to *shape
	anyShape      = &shape{}
	unmarshalerTy = reflect.TypeFor[json.Unmarshaler]()
)

// shapeOf returns the shape of t, cached.
func shapeOf(t reflect.Type) *shape {
	if t == nil {
		return anyShape
	}
	if s, ok := shapes.Load(t); ok {
		return s.(*shape)
	}
	s, d := anyShape, t
	for d.Kind() == reflect.Pointer && !d.Implements(unmarshalerTy) {
		d = d.Elem()
	}
	if !d.Implements(unmarshalerTy) && !reflect.PointerTo(d).Implements(unmarshalerTy) {
		switch d.Kind() {
		case reflect.Struct:
			s = &shape{fields: map[string]reflect.Type{}}
			addFields(s, d, map[reflect.Type]bool{})
		case reflect.Map, reflect.Slice, reflect.Array:
			s = &shape{elem: d.Elem()}
		}
	}
	v, _ := shapes.LoadOrStore(t, s)
	return v.(*shape)
}

// addFields adds the JSON fields of struct t to s, those of embedded
// structs after t's own so that a shallower field is kept. Structs in done
// are not added again (a struct may embed a pointer to itself).
func addFields(s *shape, t reflect.Type, done map[reflect.Type]bool) {
	done[t] = true
	var embedded []reflect.Type
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		ft := f.Type
		if f.Anonymous && name == "" {
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				if !done[ft] {
					embedded = append(embedded, ft)
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		if _, ok := s.fields[name]; !ok {
			s.fields[name] = f.Type
			s.names = append(s.names, name)
		}
	}
	for _, et := range embedded {
		addFields(s, et, done)
	}
}

// keyWalker walks one valid JSON value.
type keyWalker struct {
	data []byte
	pos  int
}

func (w *keyWalker) space() {
	for w.pos < len(w.data) {
		switch w.data[w.pos] {
		case ' ', '\t', '\n', '\r':
			w.pos++
		default:
			return
		}
	}
}

// value walks the value at pos, decoded into t.
func (w *keyWalker) value(t reflect.Type) error {
	w.space()
	switch w.data[w.pos] {
	case '{':
		return w.object(shapeOf(t))
	case '[':
		return w.array(shapeOf(t))
	case '"':
		w.str()
	default: // number, true, false, null
		for ; w.pos < len(w.data); w.pos++ {
			switch w.data[w.pos] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return nil
			}
		}
	}
	return nil
}

// str skips the string at pos and returns it with its quotes.
func (w *keyWalker) str() []byte {
	start := w.pos
	for {
		w.pos += 1 + bytes.IndexByte(w.data[w.pos+1:], '"')
		// The quote ends the string unless an odd run of backslashes
		// escapes it (the opening quote ends every run).
		n := 0
		for w.data[w.pos-1-n] == '\\' {
			n++
		}
		if n%2 == 0 {
			break
		}
	}
	w.pos++
	return w.data[start:w.pos]
}

// key reads the object key at pos as encoding/json reads it: escapes
// decoded, invalid UTF-8 replaced with U+FFFD.
func (w *keyWalker) key() []byte {
	q := w.str()
	raw := q[1 : len(q)-1]
	if bytes.IndexByte(raw, '\\') < 0 && utf8.Valid(raw) {
		return raw
	}
	var k string
	_ = json.Unmarshal(q, &k)
	return []byte(k)
}

func (w *keyWalker) object(s *shape) error {
	w.pos++ // {
	var buf [16][]byte
	seen := buf[:0]
	var many map[string]bool // seen, once there are more than len(buf)
	for w.next('}') {
		k := w.key()
		w.space()
		w.pos++ // :
		vt := s.elem
		if s.fields != nil {
			t, ok := s.fields[string(k)]
			if !ok {
				e := &keyError{key: string(k)}
				for _, name := range s.names {
					if strings.EqualFold(name, e.key) {
						e.want = name
						break
					}
				}
				return e
			}
			vt = t
		}
		dup := false
		if many != nil {
			dup = many[string(k)]
			many[string(k)] = true
		} else {
			for _, p := range seen {
				dup = dup || bytes.Equal(p, k)
			}
			if seen = append(seen, k); len(seen) > len(buf) {
				many = make(map[string]bool, 2*len(seen))
				for _, p := range seen {
					many[string(p)] = true
				}
			}
		}
		if dup {
			return &keyError{key: string(k), dup: true}
		}
		if err := w.value(vt); err != nil {
			return within(err, pathKey(string(k)))
		}
	}
	return nil
}

func (w *keyWalker) array(s *shape) error {
	w.pos++ // [
	for i := 0; w.next(']'); i++ {
		if err := w.value(s.elem); err != nil {
			return within(err, "["+strconv.Itoa(i)+"]")
		}
	}
	return nil
}

// next moves to the next member of the object or array being walked, past
// a comma, and reports true; or past its closing end, and reports false.
func (w *keyWalker) next(end byte) bool {
	w.space()
	switch w.data[w.pos] {
	case end:
		w.pos++
		return false
	case ',':
		w.pos++
		w.space()
	}
	return true
}
