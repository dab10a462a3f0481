# nginx with ngx_http_shield_module, built against the exact nginx of the official image.
#
#   docker build -t nginx-shield .
#   docker run --rm -p 8080:8080 nginx-shield
#
# Same route as scripts/lib.sh's "vendored" build: the module is compiled by cargo with
# nginx-sys building the given nginx version (--with-compat, as the official image is), so the
# module's binary signature matches the image's nginx. Keep NGINX_VERSION equal to the
# nginx-src version in Cargo.lock (1.28.3) unless you also set NGX_VERSION to download another.
ARG NGINX_VERSION=1.28.3

FROM rust:1-bookworm AS build
ARG NGINX_VERSION
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libclang-dev libpcre2-dev libssl-dev zlib1g-dev pkg-config make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
# NGX_VERSION makes nginx-src fetch that exact nginx release instead of its bundled copy.
RUN NGX_VERSION="${NGINX_VERSION}" cargo build --release --locked --features vendored \
 && cp target/release/libngx_http_shield_module.so /ngx_http_shield_module.so

FROM nginx:${NGINX_VERSION}-bookworm
COPY --from=build /ngx_http_shield_module.so /etc/nginx/modules/ngx_http_shield_module.so
COPY nginx-conf/docker.conf /etc/nginx/nginx.conf
COPY nginx-conf/demo-site /usr/share/nginx/html
EXPOSE 8080
RUN nginx -t
