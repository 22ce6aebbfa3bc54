package setup

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/mtakit/mta/queue/logstore"
)

// OpenStore opens the embedded queue store in dir, saying plainly when
// another process holds it.
func OpenStore(dir string, log *slog.Logger) (*logstore.Store, error) {
	store, err := logstore.Open(dir, &logstore.Config{Logger: log.With("part", "store")})
	if errors.Is(err, logstore.ErrLocked) {
		return nil, fmt.Errorf("queue directory %s is in use by another process", dir)
	}
	return store, err
}
