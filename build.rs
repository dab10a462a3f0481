//! Passes what nginx-sys learned about the nginx build to this crate:
//! - `ngx_feature="…"` cfgs (e.g. `http_ssl`), so glue only touches fields nginx compiled in;
//! - the nginx build directory, written to `<target>/<profile>/nginx-build-dir` so the scripts
//!   can find the vendored nginx binary (`<dir>/nginx`) the module was built against.

use std::env;
use std::fs;
use std::path::PathBuf;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    for var in ["DEP_NGINX_FEATURES", "DEP_NGINX_FEATURES_CHECK", "DEP_NGINX_BUILD_DIR", "DEP_NGINX_VERSION_NUMBER"] {
        println!("cargo::rerun-if-env-changed={var}");
    }

    let known = env::var("DEP_NGINX_FEATURES_CHECK").unwrap_or_else(|_| "any()".into());
    println!("cargo::rustc-check-cfg=cfg(ngx_feature, values({known}))");
    if let Ok(features) = env::var("DEP_NGINX_FEATURES") {
        for feature in features.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            println!("cargo::rustc-cfg=ngx_feature=\"{feature}\"");
        }
    }

    // nginx 1.23.0 chained repeated headers (`ngx_table_elt_t.next`) and made
    // `headers_out.cache_control` a pointer instead of an array.
    println!("cargo::rustc-check-cfg=cfg(nginx_header_chains)");
    let version: u64 = env::var("DEP_NGINX_VERSION_NUMBER").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    if version >= 1_023_000 {
        println!("cargo::rustc-cfg=nginx_header_chains");
    }

    if let (Ok(build_dir), Ok(out_dir)) = (env::var("DEP_NGINX_BUILD_DIR"), env::var("OUT_DIR")) {
        // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out.
        let profile_dir = PathBuf::from(out_dir).ancestors().nth(3).map(PathBuf::from);
        if let Some(dir) = profile_dir {
            let _ = fs::write(dir.join("nginx-build-dir"), build_dir);
        }
    }
}
