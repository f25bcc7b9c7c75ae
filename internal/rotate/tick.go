package rotate

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/rotatord/rotatord"
)

// TickResult says what one Tick did.
type TickResult struct {
	Started   int // scheduled rotations started
	Advanced  int // rotations moved along (distributed, completed, rolled back)
	Resigned  int // accounts re-signed
	Confirmed int // rotations confirmed by asking the servers (CONNZ)
	KeySteps  int // steps of fleet and signing-key rotations (keyrotation.go)
	// Activations counts accounts re-signed to renew the activation
	// tokens of their imports.
	Activations int
}

// Tick does the scheduler's work once: it confirms rotations through the
// servers' connection lists when events may have been missed, starts the
// rotations that are due, moves rotations in flight along (including those a
// dead replica left), re-signs accounts with new revocations, and renews
// the activation tokens rotatord minted before they expire. Every
// decision uses the injected clock, so tests call Tick after moving time.
func (s *Service) Tick(ctx context.Context) (TickResult, error) {
	var res TickResult
	var errs []error
	now := s.now()

	// Before deadlines roll anything back, ask the servers who is connected:
	// only rotations they said are not may roll back.
	var expired []string // nil: all of them (nobody to ask)
	if s.checker != nil {
		check, err := s.checkConnected(ctx)
		res.Confirmed, expired = check.confirmed, check.expired
		if err != nil {
			errs = append(errs, err)
		}
	}

	ids, err := s.store.ListRotationsToAdvance(ctx, now, 1000, expired)
	if err != nil {
		errs = append(errs, err)
	}
	res.Advanced += forEach(ctx, s.log, ids, func(ctx context.Context, id string) error {
		_, err := s.advance(ctx, id, false)
		return err
	})

	for ctx.Err() == nil {
		var due []string
		err := s.store.InTx(ctx, func(ctx context.Context) error {
			var err error
			due, err = s.store.ClaimDueAgents(ctx, now, 500)
			return err
		})
		if err != nil {
			errs = append(errs, err)
			break
		}
		started := s.startAll(ctx, due)
		res.Started += started
		if len(due) < 500 || started == 0 {
			break
		}
	}

	// Fleet and signing-key rotations: their waves start rotations the
	// next tick advances.
	n, err := s.driveKeyLifecycle(ctx)
	res.KeySteps = n
	if err != nil {
		errs = append(errs, err)
	}

	if err := s.sweepRevocations(ctx, now); err != nil {
		errs = append(errs, err)
	}
	n, err = s.resignIfDue(ctx)
	res.Resigned = n
	if err != nil {
		errs = append(errs, err)
	}
	// By the database's clock, a margin past the acceptance window: a
	// replica whose clock runs ahead must not forget a proof that another
	// replica still accepts.
	if err := s.store.PruneProofs(ctx, rotatord.ProofReplayMargin); err != nil {
		errs = append(errs, err)
	}
	if s.due(&s.lastPrune, alertPruneEvery, now) {
		if n, err := s.store.PruneAlerts(ctx, s.alertRetention); err != nil {
			errs = append(errs, err)
		} else if n > 0 {
			s.log.Info("deleted alerts past their retention", "alerts", n, "retention", s.alertRetention.String())
		}
	}
	if s.due(&s.lastRenew, renewEvery, now) {
		if res.Activations, err = s.RenewActivations(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return res, errors.Join(errs...)
}

var errSkip = errors.New("skip")

// batchSize is how many rotations one transaction starts or completes.
const batchSize = 64

// startAll starts the rotations of due agents, a batch per transaction; a
// batch that fails, and agents whose delivery calls out of the database,
// are started one by one. It returns how many started.
func (s *Service) startAll(ctx context.Context, due []string) int {
	var (
		mu      sync.Mutex
		single  []string
		started int
	)
	forEach(ctx, s.log, slices.Collect(slices.Chunk(due, batchSize)), func(ctx context.Context, batch []string) error {
		n, rest, err := s.startDue(ctx, batch)
		if err != nil {
			s.log.Warn("batch start failed; starting one by one", "agents", len(batch), "err", err)
			rest = batch
		}
		mu.Lock()
		single = append(single, rest...)
		started += n
		mu.Unlock()
		return nil
	})
	return started + forEach(ctx, s.log, single, func(ctx context.Context, name string) error {
		_, err := s.StartRotation(ctx, SystemActor, name, rotatord.TriggerSchedule)
		if errors.Is(err, errNotDue) || isInFlight(err) || errors.Is(err, errAgentRevoked) {
			return errSkip // another replica got there first
		}
		if errors.Is(err, rotatord.ErrJWTFull) {
			return errSkip // alerted and postponed
		}
		return err
	})
}

// workers bounds how many rotations one replica works on at once; the
// database pool has room for them and for the API.
const workers = 16

// forEach runs fn for every item with a few workers; it logs failures and
// returns how many succeeded.
func forEach[T any](ctx context.Context, log *slog.Logger, items []T, fn func(context.Context, T) error) int {
	return forEachN(ctx, log, workers, items, fn)
}

// forEachN is forEach with n workers.
func forEachN[T any](ctx context.Context, log *slog.Logger, n int, items []T, fn func(context.Context, T) error) int {
	var (
		mu sync.Mutex
		ok int
		wg sync.WaitGroup
	)
	ch := make(chan T)
	for range min(n, len(items)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for item := range ch {
				err := fn(ctx, item)
				switch {
				case err == nil:
					mu.Lock()
					ok++
					mu.Unlock()
				case errors.Is(err, errSkip), ctx.Err() != nil:
				default:
					log.Warn("rotation step failed; will retry", "item", item, "err", err)
				}
			}
		}()
	}
	for _, it := range items {
		select {
		case ch <- it:
		case <-ctx.Done():
		}
	}
	close(ch)
	wg.Wait()
	return ok
}

// Scheduler runs Tick on a robfig/cron schedule.
type Scheduler struct {
	cron *cron.Cron
}

// StartScheduler runs s.Tick on spec (for example "@every 1s"), never two at
// once, until Stop.
func (s *Service) StartScheduler(ctx context.Context, spec string) (*Scheduler, error) {
	c := cron.New(cron.WithChain(cron.SkipIfStillRunning(cronLogger{s.log})), cron.WithLogger(cronLogger{s.log}))
	_, err := c.AddFunc(spec, func() {
		if _, err := s.Tick(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("scheduler tick", "err", err)
		}
	})
	if err != nil {
		return nil, rotatord.Errorf(rotatord.EINVALID, "scheduler spec %q: %v", spec, err)
	}
	c.Start()
	return &Scheduler{cron: c}, nil
}

// Stop stops the schedule and waits for a running tick to end.
func (sc *Scheduler) Stop() {
	<-sc.cron.Stop().Done()
}

// cronLogger adapts slog to cron's logger; cron's info lines are debug here.
type cronLogger struct{ log *slog.Logger }

func (l cronLogger) Info(msg string, kv ...any) { l.log.Debug("cron: "+msg, kv...) }
func (l cronLogger) Error(err error, msg string, kv ...any) {
	l.log.Error("cron: "+msg, append(kv, "err", err)...)
}

// Rotation returns a rotation by ID.
func (s *Service) Rotation(ctx context.Context, id string) (*rotatord.Rotation, error) {
	return s.store.FindRotation(ctx, id)
}

// Rotations returns a page of rotations matching f, newest first. With
// f.Agent set, an unknown agent is ENOTFOUND; f.After is the ID of the last
// rotation of the previous page, or empty.
func (s *Service) Rotations(ctx context.Context, f rotatord.RotationFilter) ([]*rotatord.Rotation, error) {
	if f.State != "" && !rotatord.ValidRotationState(f.State) {
		return nil, rotatord.Errorf(rotatord.EINVALID, "state %.40q is not one of issued, distributed, confirmed, completed, rolled_back", f.State)
	}
	if f.Agent != "" {
		g, err := s.store.FindAgentByName(ctx, f.Agent)
		if err != nil {
			return nil, err
		}
		f.AgentID = g.ID
	}
	return s.store.ListRotations(ctx, f)
}

// due reports whether every has passed since *last (or it is the first
// time), and if so moves *last to now: the periodic chores of Tick (the
// revocation sweep, the renewal of activation tokens, the pruning of alerts)
// and the re-signer each run once an interval.
func (s *Service) due(last *time.Time, every time.Duration, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.Sub(*last) < every {
		return false
	}
	*last = now
	return true
}
