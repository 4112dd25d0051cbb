//! `${VAR}` and `${VAR:default}` in the config text (`PROTOCOL.md` §9.3).

/// Expands `${NAME}` and `${NAME:default}` on raw text (§9.3). `lookup` reads a variable.
pub fn expand_env(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let inner = &after[..end];
        let (name, default) = match inner.find(':') {
            Some(i) => (&inner[..i], Some(&inner[i + 1..])),
            None => (inner, None),
        };
        if name.is_empty() {
            out.push_str(&rest[start..start + 2 + end + 1]);
        } else {
            let line = text[..text.len() - rest.len() + start]
                .lines()
                .count()
                .max(1);
            let value = match (lookup(name), default) {
                (Some(v), _) => v,
                (None, Some("__III_ENGINE_VERSION__")) => env!("CARGO_PKG_VERSION").to_string(),
                (None, Some(d)) => d.to_string(),
                (None, None) => {
                    return Err(format!(
                        "line {line}: environment variable {name} is not set and ${{{name}}} has no default (write ${{{name}:default}})"
                    ))
                }
            };
            out.push_str(&value);
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}
