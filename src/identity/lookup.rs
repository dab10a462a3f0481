//! Claims addressed by nginx variable names. `$shield_jwt_claim_<name>`: nginx lower-cases
//! variable names and allows only `[a-z0-9_]`, so `<name>` is resolved as: the top-level claim
//! of exactly that name (ASCII case-insensitive), else a path through nested objects split at
//! underscores, the longest leading key first (`realm_access_roles` is `realm_access` →
//! `roles`). The search is bounded by [`MAX_STEPS`] key lookups.

use serde_json::{Map, Value};

pub const MAX_STEPS: usize = 64;

/// The claim at an explicit path (`shield_jwt_require`'s dotted names).
pub fn path<'a>(claims: &'a Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let mut value = claims.get(first)?;
    for key in rest {
        value = value.as_object()?.get(key)?;
    }
    Some(value)
}

/// The claim a variable name suffix designates.
pub fn variable<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    let mut steps = 0;
    resolve(claims, name, &mut steps)
}

fn get<'a>(map: &'a Map<String, Value>, key: &str, steps: &mut usize) -> Option<&'a Value> {
    *steps += 1;
    if *steps > MAX_STEPS {
        return None;
    }
    map.get(key).or_else(|| map.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v))
}

fn resolve<'a>(map: &'a Map<String, Value>, name: &str, steps: &mut usize) -> Option<&'a Value> {
    if name.is_empty() {
        return None;
    }
    if let Some(v) = get(map, name, steps) {
        return Some(v);
    }
    for (i, _) in name.match_indices('_').collect::<Vec<_>>().into_iter().rev() {
        let (head, tail) = (&name[..i], &name[i + 1..]);
        if let Some(Value::Object(inner)) = get(map, head, steps) {
            if let Some(v) = resolve(inner, tail, steps) {
                return Some(v);
            }
        }
        if *steps > MAX_STEPS {
            return None;
        }
    }
    None
}

/// A claim as variable text: strings as they are, arrays of scalars joined by commas, any
/// other value as compact JSON.
pub fn render(value: &Value) -> String {
    let scalar = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match value {
        Value::Array(items) if items.iter().all(|v| !v.is_array() && !v.is_object()) => {
            items.iter().map(scalar).collect::<Vec<_>>().join(",")
        }
        Value::Object(_) | Value::Array(_) => value.to_string(),
        v => scalar(v),
    }
}
