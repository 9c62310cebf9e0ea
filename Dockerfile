# syntax=docker/dockerfile:1
# The sidekick container image. The build stage runs scripts/package.sh, the script CI runs, so the image holds
# the same Native AOT binary as the tarball and the .deb; the runtime stage is a minimal glibc image.
#   docker build -t sidekick:latest .
#   docker run --rm -p 8080:8080 sidekick:latest --health-path=/minio/health/ready http://minio{1...4}:9000
# The version comes from the build context's .git folder (a tag v1.2.3 gives 1.2.3). Where the context has none
# (a worktree, a source archive): docker build --build-arg SIDEKICK_VERSION=1.2.3 --build-arg SIDEKICK_COMMIT=... .

FROM mcr.microsoft.com/dotnet/sdk:10.0 AS build
# Read by scripts/version.sh when set; empty means "ask git".
ARG SIDEKICK_VERSION=
ARG SIDEKICK_COMMIT=
WORKDIR /src
COPY . .
# Installs clang, lld and zlib1g-dev (the stage runs as root), publishes, packages.
RUN bash scripts/package.sh

# glibc, OpenSSL and CA certificates, and user app (1654); no shell, no package manager.
FROM mcr.microsoft.com/dotnet/runtime-deps:10.0-noble-chiseled
COPY --from=build /src/artifacts/image/ /
USER 1654
EXPOSE 8080
ENTRYPOINT ["/usr/bin/sidekick"]
