//! Command-line parsing for `iii-bench`: a tiny `--name value` / `--name=value` / `--flag`
//! parser (no extra dependency), byte sizes (`100`, `10k`, `10KiB`, `1m`, `1MiB`) and
//! comma-separated lists of counts (`1,16,64`) or names (`always,every_second`).

/// The arguments after the subcommand, consumed option by option; whatever is left over at
/// the end is an error.
pub struct Args {
    rest: Vec<String>,
}

impl Args {
    pub fn new(rest: Vec<String>) -> Self {
        Args { rest }
    }

    /// True (and consumed) if `--name` is present.
    pub fn flag(&mut self, name: &str) -> bool {
        let before = self.rest.len();
        self.rest.retain(|a| a != name);
        self.rest.len() != before
    }

    /// The value of `--name v` or `--name=v` (the last one wins), consumed.
    pub fn value(&mut self, name: &str) -> Result<Option<String>, String> {
        let mut found = None;
        let mut i = 0;
        while i < self.rest.len() {
            if self.rest[i] == name {
                if i + 1 >= self.rest.len() {
                    return Err(format!("{name} needs a value"));
                }
                found = Some(self.rest.remove(i + 1));
                self.rest.remove(i);
                continue;
            }
            if let Some(v) = self.rest[i]
                .strip_prefix(name)
                .and_then(|s| s.strip_prefix('='))
            {
                found = Some(v.to_string());
                self.rest.remove(i);
                continue;
            }
            i += 1;
        }
        Ok(found)
    }

    /// A number option with a default.
    pub fn usize_or(&mut self, name: &str, default: usize) -> Result<usize, String> {
        match self.value(name)? {
            None => Ok(default),
            Some(v) => parse_count(&v).map_err(|e| format!("{name}: {e}")),
        }
    }

    /// A comma-separated list of counts with a default.
    pub fn list_or(&mut self, name: &str, default: &[usize]) -> Result<Vec<usize>, String> {
        match self.value(name)? {
            None => Ok(default.to_vec()),
            Some(v) => parse_list(&v).map_err(|e| format!("{name}: {e}")),
        }
    }

    /// A comma-separated list of names, each one of `allowed`, with a default.
    pub fn names_or(
        &mut self,
        name: &str,
        allowed: &[&'static str],
        default: &[&'static str],
    ) -> Result<Vec<&'static str>, String> {
        let Some(v) = self.value(name)? else {
            return Ok(default.to_vec());
        };
        let pick = |p: &str| {
            allowed
                .iter()
                .copied()
                .find(|a| *a == p)
                .ok_or_else(|| format!("{name}: unknown {p:?} (one of {})", allowed.join(", ")))
        };
        let v: Vec<&'static str> = v
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(pick)
            .collect::<Result<_, _>>()?;
        if v.is_empty() {
            return Err(format!("{name}: empty list"));
        }
        Ok(v)
    }

    /// A byte size option with a default.
    pub fn size_or(&mut self, name: &str, default: usize) -> Result<usize, String> {
        match self.value(name)? {
            None => Ok(default),
            Some(v) => parse_size(&v).map_err(|e| format!("{name}: {e}")),
        }
    }

    /// Fails on anything not consumed.
    pub fn finish(self) -> Result<(), String> {
        match self.rest.first() {
            None => Ok(()),
            Some(a) => Err(format!("unknown argument {a:?} (see --help)")),
        }
    }
}

/// `2000`, `2_000`, `10k` (×1000).
pub fn parse_count(s: &str) -> Result<usize, String> {
    let t = s.trim().replace('_', "").to_ascii_lowercase();
    let (digits, mult) = match t.strip_suffix('k') {
        Some(d) => (d.to_string(), 1000),
        None => (t.clone(), 1),
    };
    digits
        .parse::<usize>()
        .map(|n| n * mult)
        .map_err(|_| format!("not a count: {s:?}"))
}

/// `1,16,64,256`.
pub fn parse_list(s: &str) -> Result<Vec<usize>, String> {
    let v: Result<Vec<usize>, String> = s
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(parse_count)
        .collect();
    let v = v?;
    if v.is_empty() {
        return Err(format!("empty list: {s:?}"));
    }
    Ok(v)
}

/// `100`, `100b`, `10k`, `10kb`, `10KiB`, `1m`, `1MiB` (k and m are powers of 1024).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: usize = digits
        .parse()
        .map_err(|_| format!("not a size: {s:?} (try 100, 10k, 1MiB)"))?;
    let mult = match unit.trim() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        _ => return Err(format!("unknown size unit in {s:?} (try 100, 10k, 1MiB)")),
    };
    Ok(n * mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("100"), Ok(100));
        assert_eq!(parse_size("10k"), Ok(10240));
        assert_eq!(parse_size("10KiB"), Ok(10240));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert!(parse_size("1x").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn options() {
        let mut a = Args::new(
            ["--payload", "1k", "--direct", "--levels=1,2", "x"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        );
        assert_eq!(a.size_or("--payload", 5), Ok(1024));
        assert!(a.flag("--direct"));
        assert_eq!(a.list_or("--levels", &[9]), Ok(vec![1, 2]));
        assert_eq!(a.usize_or("--count", 7), Ok(7));
        assert!(a.finish().is_err());
        let mut a = Args::new(vec!["--kinds=b, a".to_string(), "--bad=c".to_string()]);
        assert_eq!(
            a.names_or("--kinds", &["a", "b"], &["a"]),
            Ok(vec!["b", "a"])
        );
        assert!(a.names_or("--bad", &["a", "b"], &["a"]).is_err());
        assert_eq!(a.names_or("--none", &["a", "b"], &["a"]), Ok(vec!["a"]));
    }
}
