//! Value parsers for `iii-bench`'s command line (the options themselves are declared with
//! clap next to each scenario): counts (`2000`, `10k`), byte sizes (`100`, `10k`, `10KiB`,
//! `1m`, `1MiB`), comma-separated lists of counts (`1,16,64`), durations given as a count of
//! seconds or milliseconds, and `on`/`off` switches.

use std::time::Duration;

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

/// A count of seconds (as [`parse_count`]).
pub fn parse_secs(s: &str) -> Result<Duration, String> {
    parse_count(s).map(|n| Duration::from_secs(n as u64))
}

/// A count of milliseconds (as [`parse_count`]).
pub fn parse_millis(s: &str) -> Result<Duration, String> {
    parse_count(s).map(|n| Duration::from_millis(n as u64))
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

/// A list of concurrency levels: as [`parse_list`], each at least 1.
pub fn parse_levels(s: &str) -> Result<Vec<usize>, String> {
    let v = parse_list(s)?;
    if v.contains(&0) {
        return Err("levels must be at least 1".into());
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

/// `on` or `true`, `off` or `false`.
pub fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        other => Err(format!("takes on or off, got {other:?}")),
    }
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
    fn counts_and_lists() {
        assert_eq!(parse_count("2000"), Ok(2000));
        assert_eq!(parse_count("2_000"), Ok(2000));
        assert_eq!(parse_count("10k"), Ok(10_000));
        assert!(parse_count("ten").is_err());
        assert_eq!(parse_secs("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_millis("1k"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_list("1,16, 64,"), Ok(vec![1, 16, 64]));
        assert!(parse_list(",").is_err());
        assert_eq!(parse_levels("1,64"), Ok(vec![1, 64]));
        assert!(parse_levels("0,64").is_err());
        assert_eq!(parse_on_off("off"), Ok(false));
        assert_eq!(parse_on_off("true"), Ok(true));
        assert!(parse_on_off("maybe").is_err());
    }
}
