# syntax=docker/dockerfile:1
# babysitter container image: a static-ish Rust binary on a distroless, non-root base.
#   docker build -t babysitter:0.1.0 .
# (Not built in this repository's CI: the build machine has no container engine.)

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the target directory between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin babysitter \
    && install -D -s target/release/babysitter /out/babysitter

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/babysitter /usr/local/bin/babysitter
# The built-in runbook library is compiled into the binary; the files are shipped too so
# operators can read them (and copy them into a ConfigMap to customise).
COPY --from=build /src/runbooks /usr/share/babysitter/runbooks
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/babysitter"]
CMD ["serve", "--config", "/etc/babysitter/config/babysitter.yaml"]
