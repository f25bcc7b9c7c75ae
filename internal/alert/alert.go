// Package alert delivers the alerts that rotatord writes to its outbox (in
// the same transaction as the failure they report): to the log, a
// Prometheus counter, a webhook (ROTATORD_ALERT_WEBHOOK) and a NATS subject
// (rotatord.alerts.<kind>). Each channel is retried with backoff until it
// succeeds, so an outage of the webhook loses no alert.
package alert

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rotatord/rotatord"
)

// SubjectPrefix is where alerts are published on NATS.
const SubjectPrefix = "rotatord.alerts."

// Store is the outbox.
type Store interface {
	InTx(ctx context.Context, fn func(ctx context.Context) error) error
	ClaimAlerts(ctx context.Context, now time.Time, limit int) ([]*rotatord.OutboxAlert, error)
	UpdateAlert(ctx context.Context, p *rotatord.OutboxAlert, next time.Time, lastErr string) error
}

// Dispatcher delivers alerts from the outbox.
type Dispatcher struct {
	Store   Store
	Webhook string       // empty: no webhook
	Client  *http.Client // default: 5s timeout
	Conn    func() *nats.Conn
	Log     *slog.Logger
	Now     func() time.Time

	raised *prometheus.CounterVec
}

// New returns a dispatcher and registers its counter on reg (may be nil).
func New(d Dispatcher, reg prometheus.Registerer) *Dispatcher {
	if d.Client == nil {
		d.Client = &http.Client{Timeout: 5 * time.Second}
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Conn == nil {
		d.Conn = func() *nats.Conn { return nil }
	}
	d.raised = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rotatord_alerts_total", Help: "Alerts raised, by kind and severity.",
	}, []string{"kind", "severity"})
	if reg != nil {
		reg.MustRegister(d.raised)
	}
	return &d
}

// Dispatch delivers every alert that is due and returns how many it handled.
func (d *Dispatcher) Dispatch(ctx context.Context) (int, error) {
	var n int
	err := d.Store.InTx(ctx, func(ctx context.Context) error {
		pending, err := d.Store.ClaimAlerts(ctx, d.Now(), 100)
		if err != nil {
			return err
		}
		for _, p := range pending {
			var errs []error
			if !p.Logged {
				d.Log.Warn("alert", "kind", p.Kind, "severity", p.Severity, "account", p.Account, "agent", p.Agent,
					"rotation", p.Rotation, "reason", p.Reason)
				d.raised.WithLabelValues(p.Kind, p.Severity).Inc()
				p.Logged = true
			}
			body, _ := json.Marshal(p.Alert)
			if !p.WebhookDone {
				if err := d.postWebhook(ctx, body); err != nil {
					errs = append(errs, err)
				} else {
					p.WebhookDone = true
				}
			}
			if !p.NATSDone {
				if err := d.publish(p.Kind, body); err != nil {
					errs = append(errs, err)
				} else {
					p.NATSDone = true
				}
			}
			p.Attempts++
			next, lastErr := d.Now(), ""
			if len(errs) > 0 {
				next = next.Add(backoff(p.Attempts))
				lastErr = errors.Join(errs...).Error()
				d.Log.Info("alert not fully delivered; will retry", "alert", p.ID, "attempts", p.Attempts, "retry_at", next, "err", lastErr)
			}
			if err := d.Store.UpdateAlert(ctx, p, next, lastErr); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err != nil {
		return n, fmt.Errorf("dispatch alerts: %w", err)
	}
	return n, nil
}

// backoff is 1s, 2s, 4s ... capped at 5 minutes.
func backoff(attempts int) time.Duration {
	d := time.Second
	for i := 1; i < attempts && d < 5*time.Minute; i++ {
		d *= 2
	}
	return min(d, 5*time.Minute)
}

func (d *Dispatcher) postWebhook(ctx context.Context, body []byte) error {
	if d.Webhook == "" {
		return nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.Webhook, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("webhook: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "rotatord")
	resp, err := d.Client.Do(req)
	if err != nil {
		// The URL may hold a secret token: report the failure without it.
		var ue interface{ Unwrap() error }
		if errors.As(err, &ue) {
			err = ue.Unwrap()
		}
		return fmt.Errorf("webhook: %w", err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) //nolint:errcheck // draining for reuse
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook: status %d", resp.StatusCode)
	}
	return nil
}

func (d *Dispatcher) publish(kind string, body []byte) error {
	nc := d.Conn()
	if nc == nil {
		return nil // rotatord runs without NATS
	}
	if !nc.IsConnected() {
		return errors.New("nats: not connected")
	}
	if err := nc.Publish(SubjectPrefix+kind, body); err != nil {
		return fmt.Errorf("nats: %w", err)
	}
	if err := nc.FlushTimeout(2 * time.Second); err != nil {
		return fmt.Errorf("nats: %w", err)
	}
	return nil
}

// Run dispatches every interval and whenever kick receives, until ctx ends.
func (d *Dispatcher) Run(ctx context.Context, interval time.Duration, kick <-chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-kick:
		}
		if _, err := d.Dispatch(ctx); err != nil && ctx.Err() == nil {
			d.Log.Warn("dispatch alerts", "err", err)
		}
	}
}
