//! Unit tests of the store's recovery: torn and damaged log records, and compaction with its
//! crash points (snapshot written, log not yet switched; incomplete or missing snapshots).

use super::*;

#[test]
fn every_truncation_inside_the_last_record_keeps_the_others() {
    let dir = tempdir();
    let (bytes, starts) = five_records(dir.path());
    let log = only_log(dir.path());
    let last = starts[4] as usize;
    for cut in last..bytes.len() {
        fs::write(&log, &bytes[..cut]).expect("write");
        let store = open(dir.path());
        assert_eq!(store.list("s", "g"), first_values(4), "cut at {cut}");
        assert_eq!(store.disk().last_seq, 4);
        drop(store);
        assert_eq!(fs::metadata(&log).expect("stat").len(), last as u64);
    }
}

#[test]
fn flipped_bit_in_the_last_record_drops_only_it() {
    let dir = tempdir();
    let (bytes, starts) = five_records(dir.path());
    let log = only_log(dir.path());
    for at in starts[4] as usize..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[at] ^= 1 << (at % 8);
        fs::write(&log, &damaged).expect("write");
        let mut store = open(dir.path());
        assert_eq!(store.list("s", "g"), first_values(4), "bit flipped at {at}");
        // Writing continues right after the last good record.
        store.set("s", "g", "new", json!(1)).expect("set");
        drop(store);
        let store = open(dir.path());
        assert_eq!(store.list("s", "g").len(), 5);
    }
}

#[test]
fn flipped_bit_in_a_middle_record_refuses_to_open() {
    let dir = tempdir();
    let (bytes, starts) = five_records(dir.path());
    let log = only_log(dir.path());
    for at in starts[2] as usize..starts[3] as usize {
        let mut damaged = bytes.clone();
        damaged[at] ^= 1 << (at % 8);
        fs::write(&log, &damaged).expect("write");
        let err = Store::open(options(dir.path())).expect_err("must refuse");
        let StoreError::Corrupt { file, offset, .. } = &err else {
            panic!("unexpected error {err}");
        };
        assert_eq!((file, *offset), (&log, starts[2]), "bit flipped at {at}");
        let message = err.to_string();
        assert!(
            message.contains(&format!("byte offset {}", starts[2])),
            "{message}"
        );
        assert!(message.contains(&log.display().to_string()), "{message}");
        assert_eq!(
            fs::read(&log).expect("read"),
            damaged,
            "file left untouched"
        );
    }
}

#[test]
fn garbage_after_the_last_record_is_trimmed() {
    let dir = tempdir();
    let (bytes, _) = five_records(dir.path());
    let log = only_log(dir.path());
    let mut garbage = bytes.clone();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..4096 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        garbage.push(x as u8);
    }
    fs::write(&log, &garbage).expect("write");
    let store = open(dir.path());
    assert_eq!(store.list("s", "g"), first_values(5));
    drop(store);
    assert_eq!(fs::read(&log).expect("read"), bytes);
}

#[test]
fn compaction_keeps_data_and_bounds_the_log() {
    let dir = tempdir();
    let mut opts = options(dir.path());
    opts.compact_threshold_bytes = 2048;
    let mut store = Store::open(opts.clone()).expect("open");
    let (mut compactions, mut writes) = (0, 0);
    for i in 0..600u64 {
        let group = format!("g{}", i % 3);
        store
            .set("s", &group, &format!("k{}", i % 20), json!({"i": i}))
            .expect("set");
        writes += 1;
        if i % 7 == 0
            && store
                .delete("s", "g2", &format!("k{}", i % 20))
                .expect("delete")
                .is_some()
        {
            writes += 1;
        }
        if store.needs_compaction() {
            store.compact().expect("compact");
            compactions += 1;
        }
        // The log stays within the threshold, or within the snapshot's size when that is
        // larger (rewriting a snapshot bigger than the log would not pay off).
        let bound = opts.compact_threshold_bytes.max(store.disk().snapshot_len);
        assert!(
            store.disk().log.len() <= bound,
            "log {} > {bound}",
            store.disk().log.len()
        );
        assert!(
            store.disk().snapshot_len < 8192,
            "snapshot {}",
            store.disk().snapshot_len
        );
    }
    assert!(compactions > 3, "only {compactions} compactions");
    let before = dump(&store);
    store.close().expect("close");
    let listing = files::list_dir(dir.path()).expect("list");
    assert_eq!(
        (listing.snapshots.len(), listing.logs.len()),
        (1, 1),
        "{listing:?}"
    );
    let store = Store::open(opts).expect("reopen");
    assert_eq!(dump(&store), before);
    assert_eq!(store.disk().last_seq, writes);
}

#[test]
fn compaction_without_new_writes_is_a_no_op() {
    let dir = tempdir();
    let mut store = open(dir.path());
    store.compact().expect("empty compact");
    assert!(files::list_dir(dir.path())
        .expect("list")
        .snapshots
        .is_empty());
    store.set("s", "g", "a", json!(1)).expect("set");
    store.compact().expect("compact");
    store.compact().expect("compact again");
    assert_eq!(store.disk().snapshot_seq, 1);
    assert!(!store.needs_compaction());
}

#[test]
fn crash_between_snapshot_rename_and_log_switch() {
    let dir = tempdir();
    let mut store = open(dir.path());
    for i in 0..10 {
        store
            .set("s", "g", &format!("k{i}"), json!(i))
            .expect("set");
    }
    files::write_snapshot(dir.path(), store.disk().last_seq, &store.data).expect("snapshot");
    drop(store); // crash before the new log exists
    let mut store = open(dir.path());
    assert_eq!(store.list("s", "g").len(), 10);
    for i in 10..15 {
        store
            .set("s", "g", &format!("k{i}"), json!(i))
            .expect("set");
    }
    drop(store);
    let mut store = open(dir.path());
    let expected: Vec<Value> = (0..15).map(|i| json!(i)).collect();
    assert_eq!(store.list("s", "g"), expected);
    store.compact().expect("compact");
    store.close().expect("close");
    let store = open(dir.path());
    assert_eq!(store.list("s", "g"), expected);
    let listing = files::list_dir(dir.path()).expect("list");
    assert_eq!(listing.snapshots[0].0, 15);
    assert_eq!(listing.logs[0].0, 15);
}

#[test]
fn incomplete_snapshot_falls_back_to_the_previous_one() {
    let dir = tempdir();
    let mut store = open(dir.path());
    for i in 0..10 {
        store
            .set("s", "g", &format!("k{i}"), json!(i))
            .expect("set");
    }
    store.compact().expect("compact");
    for i in 10..15 {
        store
            .set("s", "g", &format!("k{i}"), json!(i))
            .expect("set");
    }
    // A crash while writing snapshot 15: complete temp file, cut short before the rename.
    files::write_snapshot(dir.path(), 15, &store.data).expect("snapshot");
    drop(store);
    let newest = files::snapshot_path(dir.path(), 15);
    let len = fs::metadata(&newest).expect("stat").len();
    let file = fs::OpenOptions::new()
        .write(true)
        .open(&newest)
        .expect("open");
    file.set_len(len - 3).expect("truncate");
    fs::write(dir.path().join("snapshot-x.snap.tmp"), b"junk").expect("temp");
    fs::write(files::temp_path(&newest), b"junk").expect("temp");
    let store = open(dir.path());
    let expected: Vec<Value> = (0..15).map(|i| json!(i)).collect();
    assert_eq!(store.list("s", "g"), expected);
    assert_eq!(store.disk().snapshot_seq, 10);
    assert!(files::list_dir(dir.path()).expect("list").temps.is_empty());
}

#[test]
fn missing_snapshot_refuses_to_open() {
    let dir = tempdir();
    let mut store = open(dir.path());
    store.set("s", "g", "a", json!(1)).expect("set");
    store.compact().expect("compact");
    store.set("s", "g", "b", json!(2)).expect("set");
    store.close().expect("close");
    fs::remove_file(files::snapshot_path(dir.path(), 1)).expect("remove");
    let err = Store::open(options(dir.path())).expect_err("must refuse");
    assert!(
        matches!(&err, StoreError::Corrupt { offset: 0, .. }),
        "unexpected error {err}"
    );
    assert!(err.to_string().contains("missing or unreadable"), "{err}");
}
