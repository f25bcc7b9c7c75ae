package nscimport

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// DataDir is nsc's default folder for "stores" or "keys": under
// $XDG_DATA_HOME/nats/nsc (~/.local/share/nats/nsc), or the folder older
// nsc versions used (old, under the home folder) when only that one exists.
func DataDir(name, old string) string {
	home, _ := os.UserHomeDir()
	data := os.Getenv("XDG_DATA_HOME")
	if data == "" {
		data = filepath.Join(home, ".local", "share")
	}
	dir := filepath.Join(data, "nats", "nsc", name)
	if _, err := os.Stat(dir); err != nil && home != "" {
		if _, err := os.Stat(filepath.Join(home, old)); err == nil {
			return filepath.Join(home, old)
		}
	}
	return dir
}

// ReadFile reads one file to import.
func ReadFile(path string) (File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return File{}, fmt.Errorf("read %s: %w", path, err)
	}
	return File{Path: path, Content: b}, nil
}

// ReadStore reads an operator of an nsc store:
//
//	<stores>/<operator>/<operator>.jwt
//	<stores>/<operator>/accounts/<account>/<account>.jwt
//	<stores>/<operator>/accounts/<account>/users/<user>.jwt
//
// With no operator named, the store must hold exactly one. Seeds are not
// read here: set Source.Seeds (see SeedFiles).
func ReadStore(stores, operator string) (Source, error) {
	var src Source
	if operator == "" {
		entries, err := os.ReadDir(stores)
		if errors.Is(err, fs.ErrNotExist) {
			return src, fmt.Errorf("no nsc store at %s: pass --store DIR, or --operator-jwt FILE with --account-jwt, --creds and --seed files", stores)
		}
		if err != nil {
			return src, fmt.Errorf("read nsc store: %w", err)
		}
		var ops []string
		for _, e := range entries {
			if e.IsDir() && isFile(filepath.Join(stores, e.Name(), e.Name()+".jwt")) {
				ops = append(ops, e.Name())
			}
		}
		switch len(ops) {
		case 0:
			return src, fmt.Errorf("no nsc operator in %s (looked for %s)", stores, filepath.Join(stores, "<operator>", "<operator>.jwt"))
		case 1:
			operator = ops[0]
		default:
			return src, fmt.Errorf("the nsc store %s holds operators %s: choose one with --operator", stores, strings.Join(ops, ", "))
		}
	}
	dir := filepath.Join(stores, operator)
	var err error
	if src.Operator, err = ReadFile(filepath.Join(dir, operator+".jwt")); err != nil {
		return src, err
	}
	accDir := filepath.Join(dir, "accounts")
	accounts, err := os.ReadDir(accDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return src, fmt.Errorf("read nsc accounts: %w", err)
	}
	for _, a := range accounts {
		path := filepath.Join(accDir, a.Name(), a.Name()+".jwt")
		if !a.IsDir() || !isFile(path) {
			continue
		}
		f, err := ReadFile(path)
		if err != nil {
			return src, err
		}
		src.Accounts = append(src.Accounts, f)
		users, err := os.ReadDir(filepath.Join(accDir, a.Name(), "users"))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return src, fmt.Errorf("read nsc users of %s: %w", a.Name(), err)
		}
		for _, u := range users {
			if u.IsDir() || !strings.HasSuffix(u.Name(), ".jwt") {
				continue
			}
			f, err := ReadFile(filepath.Join(accDir, a.Name(), "users", u.Name()))
			if err != nil {
				return src, err
			}
			src.Users = append(src.Users, f)
		}
	}
	return src, nil
}

func isFile(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular()
}
