// kms-reference: the shape of the KMS v2 plugins that exist today, written
// only as a yardstick for bench/run.sh. grpc-go serves the KMS v2 API on a
// Unix socket; Encrypt and Decrypt are AES-256-GCM under a key held in
// process memory with a random 96-bit nonce. There is no TPM, no key
// derivation and no key file: the cheapest honest plugin that can be built
// on this stack, so every ratio against it is conservative for tpm2-kms.
package main

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kmsv2 "tpm2kmsbench/kmsv2"
)

const keyID = "reference-1"

type plugin struct {
	kmsv2.UnimplementedKeyManagementServiceServer
	aead cipher.AEAD
}

func (p *plugin) Status(ctx context.Context, req *kmsv2.StatusRequest) (*kmsv2.StatusResponse, error) {
	return &kmsv2.StatusResponse{Version: "v2", Healthz: "ok", KeyId: keyID}, nil
}

func (p *plugin) Encrypt(ctx context.Context, req *kmsv2.EncryptRequest) (*kmsv2.EncryptResponse, error) {
	if len(req.Plaintext) == 0 {
		return nil, status.Error(codes.InvalidArgument, "empty plaintext")
	}
	nonce := make([]byte, p.aead.NonceSize(), p.aead.NonceSize()+len(req.Plaintext)+p.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, status.Error(codes.Internal, "no randomness")
	}
	ct := p.aead.Seal(nonce, nonce, req.Plaintext, nil)
	return &kmsv2.EncryptResponse{Ciphertext: ct, KeyId: keyID}, nil
}

func (p *plugin) Decrypt(ctx context.Context, req *kmsv2.DecryptRequest) (*kmsv2.DecryptResponse, error) {
	n := p.aead.NonceSize()
	if req.KeyId != keyID || len(req.Ciphertext) < n+p.aead.Overhead() {
		return nil, status.Error(codes.InvalidArgument, "cannot decrypt")
	}
	pt, err := p.aead.Open(nil, req.Ciphertext[:n], req.Ciphertext[n:], nil)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, "cannot decrypt")
	}
	return &kmsv2.DecryptResponse{Plaintext: pt}, nil
}

func run(path string) error {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	srv := grpc.NewServer()
	kmsv2.RegisterKeyManagementServiceServer(srv, &plugin{aead: aead})
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		srv.GracefulStop()
	}()
	return srv.Serve(lis)
}

func main() {
	listen := flag.String("listen", "", "Unix socket path to serve on")
	flag.Parse()
	if *listen == "" {
		fmt.Fprintln(os.Stderr, "usage: kms-reference --listen PATH")
		os.Exit(2)
	}
	if err := run(*listen); err != nil {
		fmt.Fprintln(os.Stderr, "kms-reference:", err)
		os.Exit(1)
	}
}
