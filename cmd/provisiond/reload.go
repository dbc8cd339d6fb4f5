package main

import (
	"context"
	"os"

	"github.com/rs/zerolog"

	"github.com/edgeprov/provisiond/internal/registry"
	"github.com/edgeprov/provisiond/provision"
)

// quotaSetter is the part of the engine a reload changes.
type quotaSetter interface {
	SetQuotas(provision.Quotas)
}

// reloadOnHangup reads the operator's files again at each SIGHUP received
// on hup (systemctl reload provisiond), until ctx ends: the per-user quota
// file (--user-quota-file, over --user-quota's defaults, which a reload
// does not change) and the registry credentials (--registry-auth). Each is
// read whole before anything changes: a file that does not load is logged
// and everything in force stays, as nginx keeps its configuration when the
// new one has an error. Without those files, SIGHUP is logged and ignored
// (it would otherwise end the process).
func reloadOnHangup(ctx context.Context, hup <-chan os.Signal, cfg *config, eng quotaSetter, auth *registry.Auth, log zerolog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		reload(cfg, eng, auth, log)
	}
}

// reload is one reload of reloadOnHangup.
func reload(cfg *config, eng quotaSetter, auth *registry.Auth, log zerolog.Logger) {
	if cfg.UserQuotaFile == "" && cfg.RegistryAuth == "" {
		log.Info().Msg("SIGHUP: no --user-quota-file or --registry-auth to read again")
		return
	}
	ev := log.Info()
	var quotas provision.Quotas
	if cfg.UserQuotaFile != "" {
		var err error
		if quotas, err = cfg.quotas(); err != nil {
			log.Error().Err(err).Msg("reload failed: the quotas and registry credentials in force stay")
			return
		}
		ev = ev.Str("user_quota_file", cfg.UserQuotaFile).Int("user_quotas", len(quotas.Users))
	}
	var fresh *registry.Auth
	if cfg.RegistryAuth != "" {
		var err error
		if fresh, err = registry.LoadAuth(cfg.RegistryAuth); err != nil {
			log.Error().Err(err).Str("file", cfg.RegistryAuth).Msg("reload failed: the quotas and registry credentials in force stay")
			return
		}
		ev = ev.Str("registry_auth", cfg.RegistryAuth).Int("registries", fresh.Hosts())
	}
	if cfg.UserQuotaFile != "" {
		eng.SetQuotas(quotas)
	}
	if fresh != nil {
		auth.Replace(fresh)
	}
	ev.Msg("reloaded on SIGHUP")
}
