package provctl

import (
	"context"
	"fmt"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/edgeprov/provisiond/provision"
)

// resolveTag asks the registry which manifest or index the tag image
// (REGISTRY/REPO:TAG) names now and returns the reference pinned by that
// digest: the user signs the digest, and the node never resolves a tag.
// Like docker, it speaks plain HTTP only to a registry on a loopback or
// private address, and answers a private registry with the user's docker
// credentials ($DOCKER_CONFIG/config.json, as `docker login` writes it).
func resolveTag(ctx context.Context, image string) (string, error) {
	tag, err := name.NewTag(image, name.StrictValidation)
	if err != nil {
		return "", fmt.Errorf("%w: --image %q: want REGISTRY/REPO@sha256:DIGEST or REGISTRY/REPO:TAG: %w", ErrUsage, image, err)
	}
	desc, err := remote.Head(tag, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain))
	if err != nil {
		return "", fmt.Errorf("resolving %s: %w", image, err)
	}
	if desc.Digest.Algorithm != "sha256" {
		return "", fmt.Errorf("resolving %s: the registry answered a %s digest", image, desc.Digest.Algorithm)
	}
	ref := tag.Context().Name() + "@" + desc.Digest.String()
	if _, err := provision.ParseImageRef(ref); err != nil {
		return "", fmt.Errorf("resolving %s: %w", image, err)
	}
	return ref, nil
}
