package rotate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/jwtissue"
)

// AgentInput is what a caller gives to create an agent. Empty schedule,
// zero grace and empty delivery take the defaults; nil limits are
// unlimited.
type AgentInput struct {
	Name        string
	Account     string
	Permissions rotatord.Permissions
	Schedule    string
	Grace       time.Duration
	Delivery    rotatord.Delivery

	Limits          *rotatord.UserLimitsPatch
	Src             []string
	Times           []rotatord.TimeRange
	TimesLocation   string
	ConnectionTypes []string
	Tags            []string
	// Role is the name of a role of the account; the agent then has no
	// claims of its own (EINVALID if it is given some).
	Role string
}

// AgentPatch changes an agent; nil fields stay as they are. New claims
// take effect with the agent's next credentials (rotate to apply them now).
type AgentPatch struct {
	Permissions *rotatord.Permissions
	Schedule    *string
	Grace       *time.Duration
	Delivery    *rotatord.Delivery

	Limits          *rotatord.UserLimitsPatch
	Src             *[]string
	Times           *[]rotatord.TimeRange
	TimesLocation   *string
	ConnectionTypes *[]string
	Tags            *[]string
	// Role moves the agent into that role ("" out of its role). Joining a
	// role clears the agent's own claims.
	Role *string
}

// template is p's change of the agent's own claims.
func (p AgentPatch) template() rotatord.UserTemplatePatch {
	return rotatord.UserTemplatePatch{Permissions: p.Permissions, Limits: p.Limits, Src: p.Src, Times: p.Times,
		TimesLocation: p.TimesLocation, ConnectionTypes: p.ConnectionTypes}
}

func (s *Service) checkDelivery(d rotatord.Delivery) error {
	switch d {
	case rotatord.DeliveryPoll:
		return nil
	case rotatord.DeliveryVault, rotatord.DeliveryFile:
		_, err := s.distributor(d)
		return err
	}
	return rotatord.Errorf(rotatord.EINVALID, "delivery %q is not one of poll, vault, file", d)
}

func (s *Service) checkPolicy(p rotatord.RotationPolicy) error {
	if _, err := CheckSchedule(p.Schedule, s.now()); err != nil {
		return err
	}
	return p.Validate()
}

// CreateAgent creates an agent in an existing account and issues its first
// credentials. For poll delivery they are returned once, as a creds file,
// and rotatord keeps no copy of the seed; for vault and file delivery they
// are written there (and nil is returned), and when that fails nothing is
// created (EUNAVAILABLE).
func (s *Service) CreateAgent(ctx context.Context, actor Actor, in AgentInput) (*rotatord.Agent, []byte, error) {
	if err := rotatord.ValidateName("agent", in.Name); err != nil {
		return nil, nil, err
	}
	if in.Account == "" {
		return nil, nil, rotatord.Errorf(rotatord.EINVALID, "account is required")
	}
	own := rotatord.UserTemplate{Permissions: in.Permissions, Limits: rotatord.NoUserLimits, Src: in.Src, Times: in.Times,
		TimesLocation: in.TimesLocation, ConnectionTypes: in.ConnectionTypes}
	if in.Limits != nil {
		own.Limits = in.Limits.Apply(own.Limits)
	}
	own, err := checkTemplate(own, false)
	if err != nil {
		return nil, nil, err
	}
	if in.Role != "" && !own.IsEmpty() {
		return nil, nil, errRoleAndOwn(in.Name, in.Role)
	}
	tags, err := rotatord.NormalizeTags(in.Tags)
	if err != nil {
		return nil, nil, err
	}
	g := &rotatord.Agent{
		Name: in.Name, State: rotatord.AgentActive, Tags: tags,
		Rotation: rotatord.RotationPolicy{Schedule: in.Schedule, Grace: in.Grace}, Delivery: in.Delivery,
	}
	g.SetTemplate(own)
	if g.Rotation.Schedule == "" {
		g.Rotation.Schedule = rotatord.DefaultSchedule
	}
	if g.Rotation.Grace == 0 {
		g.Rotation.Grace = rotatord.DefaultGrace
	}
	if g.Delivery == "" {
		g.Delivery = rotatord.DeliveryPoll
	}
	if err := s.checkPolicy(g.Rotation); err != nil {
		return nil, nil, err
	}
	if err := s.checkDelivery(g.Delivery); err != nil {
		return nil, nil, err
	}
	var creds []byte
	err = s.store.InTx(ctx, func(ctx context.Context) error {
		acc, err := s.store.FindAccountByName(ctx, in.Account)
		if errors.Is(err, rotatord.ErrNotFound) {
			return rotatord.Errorf(rotatord.EINVALID, "account %q does not exist", in.Account)
		}
		if err != nil {
			return err
		}
		if acc.System {
			return rotatord.Errorf(rotatord.EINVALID, "agents cannot be created in the system account")
		}
		g.AccountID, g.Account, g.AccountKey = acc.ID, acc.Name, acc.PublicKey
		if in.Role != "" {
			if err := s.joinRole(ctx, g, acc.Name, in.Role); err != nil {
				return err
			}
		}
		now := s.now()
		sched, _ := ParseSchedule(g.Rotation.Schedule)
		next := sched.Next(now)
		g.NextRotationAt = &next
		if err := s.store.CreateAgent(ctx, g); err != nil {
			return err
		}
		cred, kp, err := s.issue(ctx, g, now)
		if err != nil {
			return err
		}
		if err := s.checkControlLine(g, cred.JWT); err != nil {
			return err
		}
		cred.State = rotatord.CredentialActive
		if err := s.store.CreateCredential(ctx, cred); err != nil {
			return err
		}
		g.Active = cred
		if creds, err = jwtissue.Creds(cred.JWT, jwtissue.Seed(kp)); err != nil {
			return err
		}
		if g.Delivery != rotatord.DeliveryPoll {
			// The first creds go where the agent reads them; if that fails,
			// nothing is created.
			dist, err := s.distributor(g.Delivery)
			if err != nil {
				return err
			}
			_, err = dist.Deliver(ctx, rotatord.Handoff{Account: acc.Name, Agent: g.Name, PublicKey: cred.PublicKey,
				JWT: cred.JWT, Seed: jwtissue.Seed(kp), Creds: creds, IssuedAt: cred.IssuedAt, ExpiresAt: cred.ExpiresAt})
			if err != nil {
				s.log.Warn("deliver first creds", "agent", g.Name, "delivery", g.Delivery, "err", err)
				return rotatord.Errorf(rotatord.EUNAVAILABLE, "could not deliver the first credentials by %s; nothing was created", g.Delivery)
			}
			creds = nil
		}
		if err := s.audit(ctx, actor, "agent.create", rotatord.AuditEvent{Account: acc.Name, Agent: g.Name,
			Details: claimsDetails(g, map[string]any{"schedule": g.Rotation.Schedule,
				"grace": g.Rotation.Grace.String(), "delivery": g.Delivery})}); err != nil {
			return err
		}
		return s.audit(ctx, actor, "credential.issue", rotatord.AuditEvent{Account: acc.Name, Agent: g.Name,
			PublicKey: cred.PublicKey, Details: map[string]any{"jwt_id": cred.JWTID, "expires_at": cred.ExpiresAt, "signing_key": cred.SigningKey}})
	})
	if err != nil {
		return nil, nil, fmt.Errorf("create agent %s: %w", in.Name, err)
	}
	return g, creds, nil
}

// issue creates a new user key for g and a JWT for it signed by the
// account's signing key. The credential is not stored.
func (s *Service) issue(ctx context.Context, g *rotatord.Agent, now time.Time) (*rotatord.Credential, nkeys.KeyPair, error) {
	kp, err := jwtissue.NewKey(nkeys.PrefixByteUser)
	if err != nil {
		return nil, nil, err
	}
	cred, err := s.issueFor(ctx, g, jwtissue.Public(kp), now)
	return cred, kp, err
}

// issueFor signs a user JWT for pub, a user key of agent g: with the
// role's key when g has a role, else with the account's signing key.
func (s *Service) issueFor(ctx context.Context, g *rotatord.Agent, pub string, now time.Time) (*rotatord.Credential, error) {
	life, err := CredentialLifetime(g.Rotation, now)
	if err != nil {
		return nil, err
	}
	token, claims, signer, err := s.encodeUser(ctx, g, pub, now.Add(life))
	if err != nil {
		return nil, err
	}
	return &rotatord.Credential{
		AgentID: g.ID, PublicKey: pub, JWT: token, JWTID: claims.ID, SigningKey: signer,
		IssuedAt: time.Unix(claims.IssuedAt, 0), ExpiresAt: time.Unix(claims.Expires, 0),
	}, nil
}

// Agent returns the named agent with its newest rotation.
func (s *Service) Agent(ctx context.Context, name string) (*rotatord.Agent, error) {
	g, err := s.store.FindAgentByName(ctx, name)
	if err != nil {
		return nil, err
	}
	if err := s.FillLastRotations(ctx, g); err != nil {
		return nil, err
	}
	return g, nil
}

// Agents lists agents matching f, each with its newest rotation. An
// unknown state or outcome in f is EINVALID.
func (s *Service) Agents(ctx context.Context, f rotatord.AgentFilter) ([]*rotatord.Agent, error) {
	if err := checkAgentFilter(f); err != nil {
		return nil, err
	}
	agents, err := s.store.ListAgents(ctx, f)
	if err != nil {
		return nil, err
	}
	if err := s.FillLastRotations(ctx, agents...); err != nil {
		return nil, err
	}
	return agents, nil
}

// UpdateAgent changes an agent's claims, role, rotation policy or
// delivery. New claims take effect with its next credentials; a change
// whose user JWT would not fit the servers' max_control_line is EINVALID.
func (s *Service) UpdateAgent(ctx context.Context, actor Actor, name string, p AgentPatch) (*rotatord.Agent, error) {
	if p.Delivery != nil {
		if err := s.checkDelivery(*p.Delivery); err != nil {
			return nil, err
		}
	}
	var tags []string
	if p.Tags != nil {
		var err error
		if tags, err = rotatord.NormalizeTags(*p.Tags); err != nil {
			return nil, err
		}
	}
	var g *rotatord.Agent
	err := s.store.InTx(ctx, func(ctx context.Context) error {
		var err error
		if g, err = s.store.LockAgent(ctx, name); err != nil {
			return err
		}
		changed := map[string]any{}
		role := g.Role
		if p.Role != nil {
			role = *p.Role
		}
		base := g.Template()
		if role != g.Role && role != "" {
			base = emptyTemplate() // the role's claims replace the agent's own
		}
		own, err := checkTemplate(p.template().Apply(base), false)
		if err != nil {
			return err
		}
		if role != "" && !own.IsEmpty() {
			return errRoleAndOwn(g.Name, role)
		}
		claimsChanged := !p.template().IsEmpty() || p.Tags != nil || role != g.Role
		g.SetTemplate(own)
		if p.Tags != nil {
			g.Tags = tags
		}
		switch {
		case role == "":
			g.RoleID, g.Role, g.RoleKey = 0, "", ""
		case role != g.Role || p.Tags != nil:
			// Joining, or new tags the role's templates may read.
			if err := s.joinRole(ctx, g, g.Account, role); err != nil {
				return err
			}
		}
		if p.Schedule != nil {
			g.Rotation.Schedule = *p.Schedule
			changed["schedule"] = *p.Schedule
		}
		if p.Grace != nil {
			g.Rotation.Grace = *p.Grace
			changed["grace"] = p.Grace.String()
		}
		if p.Delivery != nil {
			g.Delivery = *p.Delivery
			changed["delivery"] = *p.Delivery
		}
		if err := s.checkPolicy(g.Rotation); err != nil {
			return err
		}
		if claimsChanged {
			claimsDetails(g, changed)
			if err := s.checkUserJWT(ctx, g); err != nil {
				return err
			}
		}
		if p.Schedule != nil {
			sched, _ := ParseSchedule(g.Rotation.Schedule)
			next := sched.Next(s.now())
			g.NextRotationAt = &next
		}
		if err := s.store.UpdateAgent(ctx, g); err != nil {
			return err
		}
		return s.audit(ctx, actor, "agent.update", rotatord.AuditEvent{Account: g.Account, Agent: g.Name, Details: changed})
	})
	if err != nil {
		return nil, fmt.Errorf("update agent %s: %w", name, err)
	}
	return g, nil
}

// RevokeResult says what a revocation did.
type RevokeResult struct {
	Agent       *rotatord.Agent
	RevokedKeys []string
	// Pushed is false when no nats-server acknowledged the new account JWT
	// yet; the push is owed and retried, and servers that load the account
	// from the resolver get the revocation anyway.
	Pushed bool
	// Servers counts the servers that applied the update.
	Servers int
	// ServersBehind counts the known servers that do not hold the new
	// account JWT yet (they did not answer the push, or refused it); they
	// get it as soon as they answer again.
	ServersBehind int
}

// RevokeAgent revokes every key of an agent now: each goes into the
// account's revocations, the account JWT is re-signed, stored and pushed, so
// servers drop the agent's connections. The agent is left revoked and is no
// longer rotated. Revoking a revoked agent revokes nothing new.
func (s *Service) RevokeAgent(ctx context.Context, actor Actor, name, reason string) (*RevokeResult, error) {
	if len(reason) > maxDescription {
		return nil, rotatord.Errorf(rotatord.EINVALID, "reason is longer than %d bytes", maxDescription)
	}
	res := &RevokeResult{}
	err := s.store.InTx(ctx, func(ctx context.Context) error {
		g, keys, err := s.revokeKeys(ctx, actor, name, reason)
		res.Agent, res.RevokedKeys = g, keys
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("revoke agent %s: %w", name, err)
	}
	if len(res.RevokedKeys) > 0 {
		// The resolver serves the new JWT before the push, so that a server
		// that has not loaded the account (and only acknowledges the push)
		// loads the revoking one; the servers drop the agent when they get it.
		s.changed(ctx, res.Agent.AccountKey)
		pr, err := s.PushAccount(ctx, res.Agent.AccountID)
		res.Pushed, res.Servers, res.ServersBehind = err == nil && pr.Acked, pr.Updated, pr.Behind
	}
	return res, nil
}

// revokeKeys revokes every pending and active key of the named agent,
// leaves it revoked and re-signs its account, inside the caller's
// transaction.
func (s *Service) revokeKeys(ctx context.Context, actor Actor, name, reason string) (*rotatord.Agent, []string, error) {
	g, err := s.store.LockAgent(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	acc, err := s.store.LockAccount(ctx, g.AccountID)
	if err != nil {
		return nil, nil, err
	}
	keys, _, err := s.revokeCredentials(ctx, actor, g, acc, reason, "agent revoked: "+reason)
	if err != nil {
		return nil, nil, err
	}
	g.State = rotatord.AgentRevoked
	g.NextRotationAt = nil
	if err := s.store.UpdateAgent(ctx, g); err != nil {
		return nil, nil, err
	}
	if len(keys) > 0 {
		if err := s.resignRevoking(ctx, acc); err != nil {
			return nil, nil, err
		}
		if s.pusher != nil {
			// Timed until the last server holds it
			// (rotatord_revocation_propagation_seconds).
			if err := s.store.AddRevocationWait(ctx, acc.ID, acc.JWTVersion, s.now()); err != nil {
				return nil, nil, err
			}
		}
	}
	if err := s.auditRevoked(ctx, actor, g, acc, keys, reason); err != nil {
		return nil, nil, err
	}
	if err := s.audit(ctx, actor, "agent.revoke", rotatord.AuditEvent{Account: g.Account, Agent: g.Name,
		Details: map[string]any{"reason": reason, "keys": len(keys)}}); err != nil {
		return nil, nil, err
	}
	return g, keys, nil
}

// revocationOf is the revocation entry for credential c, revoked at now:
// with the iat and expiry of its JWT, so that the entry can be folded into
// '*' and pruned like any other.
func revocationOf(c *rotatord.Credential, now time.Time, agent, reason string) rotatord.Revocation {
	return rotatord.Revocation{PublicKey: c.PublicKey, RevokedAt: revocationTime(c, now), ExpiresAt: c.ExpiresAt,
		IssuedAt: c.IssuedAt, Agent: agent, Reason: reason}
}

// revokeCredentials revokes every pending and active key of g (locked,
// with its account acc locked) into the account's revocations and ends its
// rotation in flight, if any, with endReason; it returns the keys and the
// ended rotation's ID. The caller re-signs the account.
func (s *Service) revokeCredentials(ctx context.Context, actor Actor, g *rotatord.Agent, acc *rotatord.Account, reason, endReason string) ([]string, string, error) {
	creds, err := s.store.Credentials(ctx, g.ID, rotatord.CredentialPending, rotatord.CredentialActive)
	if err != nil {
		return nil, "", err
	}
	now := s.now()
	var keys []string
	var revs []rotatord.Revocation
	for _, c := range creds {
		if err := s.store.SetCredentialState(ctx, c.ID, rotatord.CredentialRevoked, now); err != nil {
			return nil, "", err
		}
		keys = append(keys, c.PublicKey)
		revs = append(revs, revocationOf(c, now, g.Name, reason))
	}
	var ended string
	if r, err := s.store.InFlightRotation(ctx, g.ID); err != nil {
		return nil, "", err
	} else if r != nil && r.State != rotatord.RotationConfirmed {
		// A confirmed rotation's old key is retired already: the caller's
		// re-sign carries its revocation, and that push completes it.
		r.State, r.Reason, r.FinishedAt = rotatord.RotationRolledBack, endReason, &now
		if err := s.store.UpdateRotation(ctx, r); err != nil {
			return nil, "", err
		}
		ended = r.ID
		if err := s.audit(ctx, actor, "rotation.rollback", rotatord.AuditEvent{Account: g.Account, Agent: g.Name,
			PublicKey: r.NewKey, Rotation: r.ID, Details: map[string]any{"reason": endReason}}); err != nil {
			return nil, "", err
		}
	}
	g.Active = nil
	if len(revs) > 0 {
		if err := s.store.AddRevocations(ctx, acc.ID, revs); err != nil {
			return nil, "", err
		}
	}
	return keys, ended, nil
}

// auditRevoked records the revocation of each key.
func (s *Service) auditRevoked(ctx context.Context, actor Actor, g *rotatord.Agent, acc *rotatord.Account, keys []string, reason string) error {
	for _, k := range keys {
		if err := s.audit(ctx, actor, "credential.revoke", rotatord.AuditEvent{Account: g.Account, Agent: g.Name,
			PublicKey: k, Details: map[string]any{"reason": reason, "account_jwt_id": acc.JWTID}}); err != nil {
			return err
		}
	}
	return nil
}

// revocationTime is the t of a revocation entry for c: nats-server refuses
// JWTs with iat <= t, so t must not be before the JWT's iat even when this
// replica's clock is behind the one that issued it.
func revocationTime(c *rotatord.Credential, now time.Time) time.Time {
	if c.IssuedAt.After(now) {
		return c.IssuedAt
	}
	return now.Truncate(time.Second)
}

// DeleteAgent revokes every key of the agent, then removes it. The
// revocation entries stay until the revoked JWTs expire.
func (s *Service) DeleteAgent(ctx context.Context, actor Actor, name string) error {
	var g *rotatord.Agent
	var keys []string
	err := s.store.InTx(ctx, func(ctx context.Context) error {
		var err error
		if g, keys, err = s.revokeKeys(ctx, actor, name, "agent deleted"); err != nil {
			return err
		}
		if err := s.store.DeleteAgent(ctx, g.ID); err != nil {
			return err
		}
		return s.audit(ctx, actor, "agent.delete", rotatord.AuditEvent{Account: g.Account, Agent: g.Name})
	})
	if err != nil {
		return fmt.Errorf("delete agent %s: %w", name, err)
	}
	if len(keys) > 0 {
		s.changed(ctx, g.AccountKey)
		s.pushSoon(g.AccountID)
	}
	return nil
}

// Audit lists audit events.
func (s *Service) Audit(ctx context.Context, f rotatord.AuditFilter) ([]*rotatord.AuditEvent, error) {
	return s.store.ListAudit(ctx, f)
}

// ReissueResult says what a reissue did.
type ReissueResult struct {
	Agent *rotatord.Agent
	// Creds is the new creds file for an agent with poll delivery, handed
	// out once; nil for vault and file, where it was delivered.
	Creds []byte
	// RevokedKeys are the keys revoked (active and pending ones).
	RevokedKeys []string
	// WasRevoked: the agent had been revoked and is active again.
	WasRevoked bool
	// EndedRotation is the ID of the rotation in flight that the reissue
	// ended (rolled back), or "".
	EndedRotation string
	// Pushed and Servers are as in RevokeResult.
	Pushed  bool
	Servers int
}

// ReissueAgent re-enrols an agent, for one whose credentials expired (it
// was offline past its JWT's expiry) or were lost: every pending and active
// key is revoked (into the account JWT, re-signed and pushed as by
// RevokeAgent), a rotation in flight ends (rolled back), and new
// credentials are issued as on creation: returned once for poll delivery,
// delivered to Vault or the file otherwise. A revoked agent becomes active
// again with them. The next scheduled rotation is counted from now. When
// delivery fails nothing changes (EUNAVAILABLE); an unknown agent is
// ENOTFOUND.
func (s *Service) ReissueAgent(ctx context.Context, actor Actor, name string) (*ReissueResult, error) {
	res := &ReissueResult{}
	var (
		acc *rotatord.Account
		fin func()
	)
	err := s.inTx(ctx, func(ctx context.Context) error {
		g, err := s.store.LockAgent(ctx, name)
		if err != nil {
			return err
		}
		dist, err := s.distributor(g.Delivery)
		if err != nil {
			return err
		}
		if acc, err = s.store.LockAccount(ctx, g.AccountID); err != nil {
			return err
		}
		res.WasRevoked = g.State == rotatord.AgentRevoked
		res.RevokedKeys, res.EndedRotation, err = s.revokeCredentials(ctx, actor, g, acc, "reissued", "agent reissued")
		if err != nil {
			return err
		}
		now := s.now()
		sched, err := ParseSchedule(g.Rotation.Schedule)
		if err != nil {
			return err
		}
		next := nextRun(sched, now)
		g.State, g.Failures, g.NextRotationAt = rotatord.AgentActive, 0, &next
		if err := s.store.UpdateAgent(ctx, g); err != nil {
			return err
		}
		cred, kp, err := s.issue(ctx, g, now)
		if err != nil {
			return err
		}
		cred.State = rotatord.CredentialActive
		if err := s.store.CreateCredential(ctx, cred); err != nil {
			return err
		}
		g.Active = cred
		creds, err := jwtissue.Creds(cred.JWT, jwtissue.Seed(kp))
		if err != nil {
			return err
		}
		if g.Delivery != rotatord.DeliveryPoll {
			h := rotatord.Handoff{Account: g.Account, Agent: g.Name, PublicKey: cred.PublicKey, JWT: cred.JWT,
				Seed: jwtissue.Seed(kp), Creds: creds, IssuedAt: cred.IssuedAt, ExpiresAt: cred.ExpiresAt}
			if _, err := dist.Deliver(ctx, h); err != nil {
				s.log.Warn("deliver reissued creds", "agent", g.Name, "delivery", g.Delivery, "err", err)
				return rotatord.Errorf(rotatord.EUNAVAILABLE, "could not deliver the new credentials by %s; nothing changed", g.Delivery)
			}
			creds = nil
			if f, ok := dist.(Finisher); ok {
				// What a delivery keeps of the previous creds (a file's
				// old copy) holds revoked keys now.
				fin = func() {
					if err := f.Finish(context.WithoutCancel(ctx), rotatord.Handoff{Account: h.Account, Agent: h.Agent, PublicKey: h.PublicKey}); err != nil {
						s.log.Warn("clean up after reissue", "agent", h.Agent, "err", err)
					}
				}
			}
		}
		res.Agent, res.Creds = g, creds
		if len(res.RevokedKeys) > 0 {
			if err := s.resignRevoking(ctx, acc); err != nil {
				return err
			}
			if s.pusher != nil {
				if err := s.store.AddRevocationWait(ctx, acc.ID, acc.JWTVersion, now); err != nil {
					return err
				}
			}
		}
		if err := s.auditRevoked(ctx, actor, g, acc, res.RevokedKeys, "reissued"); err != nil {
			return err
		}
		if err := s.audit(ctx, actor, "agent.reissue", rotatord.AuditEvent{Account: g.Account, Agent: g.Name,
			Details: map[string]any{"revoked_keys": len(res.RevokedKeys), "was_revoked": res.WasRevoked,
				"ended_rotation": res.EndedRotation, "delivery": g.Delivery}}); err != nil {
			return err
		}
		return s.audit(ctx, actor, "credential.issue", rotatord.AuditEvent{Account: g.Account, Agent: g.Name,
			PublicKey: cred.PublicKey, Details: map[string]any{"jwt_id": cred.JWTID, "expires_at": cred.ExpiresAt}})
	})
	if err != nil {
		return nil, fmt.Errorf("reissue agent %s: %w", name, err)
	}
	if fin != nil {
		fin()
	}
	if len(res.RevokedKeys) > 0 {
		// As for a revocation: the resolver serves the revoking JWT first.
		s.changed(ctx, acc.PublicKey)
		pr, err := s.PushAccount(ctx, acc.ID)
		res.Pushed, res.Servers = err == nil && pr.Acked, pr.Updated
	}
	return res, nil
}
