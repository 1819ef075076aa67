package ratesync

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// watchSettle is how long WatchConfig lets a burst of file events settle
// (an editor's write, rename and chmod) before it reads the file once.
const watchSettle = 50 * time.Millisecond

// WatchConfig loads the configuration file at path into r (Reload), then
// follows it: every change of the file reloads it, keeping the state of
// rules whose store and key stay the same, until ctx is done, when it
// returns nil. It returns an error at once when the file cannot be loaded
// now or cannot be watched. Later, an invalid file changes nothing: it is
// logged with its error and counted in Reloads, and the configuration in
// force stays until a valid file replaces it.
//
// The file's directory is watched, so that editors that replace the file
// and Kubernetes ConfigMap volumes (which swap a symlink) are followed; so
// is the directory of the file a symlink points to. A directory removed
// and made again is watched again.
func (r *Registry) WatchConfig(ctx context.Context, path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("ratesync: watch config: %w", err)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("ratesync: watch config: %w", err)
	}
	defer w.Close()
	dir, base := filepath.Dir(abs), filepath.Base(abs)
	if err := w.Add(dir); err != nil {
		return fmt.Errorf("ratesync: watch config %s: %w", path, err)
	}
	watched := map[string]bool{dir: true}
	// When the file is a symlink to a file elsewhere, that file's
	// directory is watched too, and found again after every change.
	target := ""
	follow := func() {
		t, err := filepath.EvalSymlinks(abs)
		if err != nil || t == abs {
			return
		}
		target = t
		if d := filepath.Dir(t); !watched[d] && w.Add(d) == nil {
			watched[d] = true
		}
	}
	follow()
	// Load after the watch starts: a change in between is not missed.
	last, err := r.reloadFile(path, nil)
	if err != nil {
		return err
	}
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	defer settle.Stop()
	var rewatch <-chan time.Time // while the file's directory is gone
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.done:
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if watched[ev.Name] && ev.Has(fsnotify.Remove|fsnotify.Rename) {
				delete(watched, ev.Name) // the watch went with the directory
				if ev.Name == dir {
					r.logger().Warn("ratesync: the configuration's directory was removed; watching for it to come back", "file", path)
					rewatch = time.After(rewatchEvery)
				}
				continue
			}
			name := filepath.Base(ev.Name)
			if name == base || ev.Name == target || strings.HasPrefix(name, "..") { // ..data: a ConfigMap's swap
				settle.Reset(watchSettle)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			r.logger().Warn("ratesync: watching the configuration", "file", path, "error", err)
			settle.Reset(watchSettle) // events may have been lost: look at the file
		case <-rewatch:
			if w.Add(dir) != nil {
				rewatch = time.After(rewatchEvery)
				continue
			}
			rewatch, watched[dir] = nil, true
			settle.Reset(watchSettle) // the file may be back, changed
		case <-settle.C:
			follow()
			if data, err := r.reloadFile(path, last); data != nil || err != nil {
				last = data
			}
		}
	}
}

// rewatchEvery is how often WatchConfig looks for the configuration's
// directory after it was removed.
const rewatchEvery = 500 * time.Millisecond

// reloadFile reloads the file at path unless its content is last. It
// returns the content it read (nil when unchanged) and the reload's error.
func (r *Registry) reloadFile(path string, last []byte) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, r.noteReload(path, fmt.Errorf("ratesync: read config: %w", err))
	}
	if last != nil && bytes.Equal(data, last) {
		return nil, nil
	}
	cfg, err := ParseConfig(path, data)
	if err != nil {
		return data, r.noteReload(path, err)
	}
	return data, r.Reload(cfg)
}

// WatchConfig follows the configuration file at path for the package-level
// functions' registry (see Registry.WatchConfig).
func WatchConfig(ctx context.Context, path string) error {
	std.mu.Lock()
	if std.reg == nil {
		std.reg = NewRegistry()
	}
	std.loaded = true
	reg := std.reg
	std.mu.Unlock()
	return reg.WatchConfig(ctx, path)
}
