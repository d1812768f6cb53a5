//! Tests of the store on real folders (and, as root, real mounts).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};

use ferry_proto::{PlanEntry, Verdict};
use rustix::fs::{AtFlags, StatxFlags};

use super::folders::mount_id_from_proc;
use super::verdicts::Digests;
use super::*;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = Store::open(&dir.path().join("up"), None, PARTIAL_TTL_DEFAULT).expect("open");
    (dir, store)
}

/// A small tmpfs mounted at a path for as long as it lives (root only).
struct Mounted(PathBuf);

impl Mounted {
    fn at(path: &Path) -> Option<Mounted> {
        Mounted::with(path, &["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
    }

    /// Folder `source` mounted again at `path`.
    fn bind(source: &Path, path: &Path) -> Option<Mounted> {
        Mounted::with(path, &["--bind", source.to_str()?])
    }

    fn with(path: &Path, args: &[&str]) -> Option<Mounted> {
        fs::create_dir_all(path).ok()?;
        let mounted = std::process::Command::new("mount")
            .args(args)
            .arg(path)
            .output()
            .ok()?
            .status
            .success();
        mounted.then(|| Mounted(path.to_path_buf()))
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let unmount = |args: &[&str]| {
            std::process::Command::new("umount")
                .args(args)
                .arg(&self.0)
                .status()
                .is_ok_and(|s| s.success())
        };
        // Still busy: detach it anyway, so that no mount outlives the test.
        if !unmount(&[]) {
            unmount(&["-l"]);
        }
    }
}

#[test]
fn a_bind_mount_is_told_apart_from_the_folder_but_shares_its_free_space() {
    let t = tempfile::tempdir().expect("tempdir");
    let Some(_disk) = Mounted::at(&t.path().join("disk")) else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let disk = t.path().join("disk");
    let (mut s, _) = Store::open(&disk.join("up"), None, PARTIAL_TTL_DEFAULT).expect("open");
    let Some(_bound) = Mounted::bind(&disk, &disk.join("up/bound")) else {
        eprintln!("skipped: cannot bind-mount here");
        return;
    };
    let bound = s
        .begin(&["bound", "a.bin"], 0, &mut FolderCache::default())
        .expect("begin");
    assert!(bound.beyond_root(), "another mount, though the same disk");
    drop(bound);
    // The 8 MiB disk keeps 3 MiB free: one 4 MiB upload fits, not two,
    // wherever on it they go.
    s.keep_free(3 << 20);
    let first = s
        .begin(&["bound", "b.bin"], 4 << 20, &mut FolderCache::default())
        .expect("the first fits");
    let second = s.begin(&["c.bin"], 4 << 20, &mut FolderCache::default());
    assert!(
        matches!(second, Err(StoreError::NoSpace { .. })),
        "{second:?}"
    );
    drop(first);
}

#[test]
fn the_mount_of_a_descriptor_reads_the_same_from_proc_as_from_statx() {
    let t = tempfile::tempdir().expect("tempdir");
    let dir = rustix::fs::open(t.path(), OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty())
        .expect("open");
    let st = rustix::fs::statx(&dir, "", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID).expect("statx");
    if st.stx_mask & StatxFlags::MNT_ID.bits() == 0 {
        eprintln!("skipped: this kernel's statx has no mount id");
        return;
    }
    assert_eq!(mount_id_from_proc(&dir), Some(st.stx_mnt_id));
}

#[test]
fn a_file_system_mounted_inside_gets_no_staged_or_resumable_uploads() {
    let (_t, mut s) = store();
    let Some(_mnt) = Mounted::at(&s.path().join("mnt")) else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let parts = ["mnt", "a.txt"];
    let up = s
        .begin(&parts, 0, &mut FolderCache::default())
        .expect("nameless files work there");
    assert!(up.beyond_root());
    drop(up);
    // A partial lives in staging, on the other file system.
    let mut folders = FolderCache::default();
    let resumed = s.begin_resumable(&["mnt", "big.bin"], &mut folders, "k", 4 << 20, 0);
    assert!(matches!(resumed, Err(StoreError::Unresumable(_))));
    drop(resumed);
    // Without O_TMPFILE nothing could keep the upload out of sight.
    s.anonymous_temp = false;
    let staged = s.begin(&["mnt", "b.txt"], 0, &mut FolderCache::default());
    assert!(matches!(staged, Err(StoreError::Unsupported(_))));
    // The folder's own file system still takes staged uploads.
    put(&s, "c.txt", b"here", OnClash::Rename).expect("stored");
}

fn put(store: &Store, path: &str, bytes: &[u8], policy: OnClash) -> Result<Stored, StoreError> {
    let parts = store.check_path(path)?;
    let mut up = store.begin(&parts, bytes.len() as u64, &mut FolderCache::default())?;
    up.write_all(bytes)?;
    up.commit(&parts, policy, &blake3::hash(bytes))
}

fn staging_is_empty(store: &Store) -> bool {
    fs::read_dir(store.path().join(STAGING_DIR))
        .expect("staging")
        .next()
        .is_none()
}

/// Like [`put`], with the session's folder cache.
fn put_with(store: &Store, path: &str, bytes: &[u8], folders: &mut FolderCache) -> Stored {
    let parts = store.check_path(path).expect("name");
    let mut up = store
        .begin(&parts, bytes.len() as u64, folders)
        .expect("begin");
    up.write_all(bytes).expect("write");
    up.commit(&parts, OnClash::Rename, &blake3::hash(bytes))
        .expect("stored")
}

/// A folder moved out of the target while a session still sends to it
/// takes nothing announced once the cache has looked again: the next file
/// goes to the path inside the target, as its ack says. Deleted, it is
/// made again.
#[test]
fn a_folder_moved_away_mid_session_is_not_written_to() {
    let (t, s) = store();
    let mut folders = FolderCache::default();
    put_with(&s, "X/a/first.bin", b"1", &mut folders);
    let archive = t.path().join("archive");
    fs::rename(s.path().join("X"), &archive).expect("move the folder away");
    // The cache looks again once its last look is this old.
    let recheck = || std::thread::sleep(super::folders::RECHECK_AFTER * 2);
    recheck();
    // Stored inside the target, under the name its ack gives.
    let stored_at_its_path = |path: &str, bytes: &[u8], folders: &mut FolderCache| {
        let got = put_with(&s, path, bytes, folders);
        assert_eq!(got.stored_as, path);
        assert_eq!(fs::read(s.path().join(path)).expect("read"), bytes);
    };
    stored_at_its_path("X/a/second.bin", b"2", &mut folders);
    assert!(!archive.join("a/second.bin").exists());

    fs::remove_dir_all(s.path().join("X")).expect("delete the folder");
    recheck();
    stored_at_its_path("X/a/third.bin", b"3", &mut folders);

    // Swapped for a symlink to the moved folder: refused, not followed.
    fs::remove_dir_all(s.path().join("X")).expect("delete the folder");
    std::os::unix::fs::symlink(&archive, s.path().join("X")).expect("symlink");
    recheck();
    let parts = s.check_path("X/a/fourth.bin").expect("name");
    let swapped = s.begin(&parts, 1, &mut folders);
    assert!(
        matches!(swapped, Err(StoreError::BadName(_))),
        "{swapped:?}"
    );
    assert!(!archive.join("a/fourth.bin").exists());
}

/// A staging folder that is a symlink (or a file) stops the server from
/// starting, with a reason naming it.
#[test]
fn a_staging_folder_that_is_a_symlink_is_named_in_the_refusal() {
    let t = tempfile::tempdir().expect("tempdir");
    let up = t.path().join("up");
    fs::create_dir(&up).expect("mkdir");
    std::os::unix::fs::symlink(t.path(), up.join(STAGING_DIR)).expect("symlink");
    let Err(e) = Store::open(&up, None, PARTIAL_TTL_DEFAULT) else {
        panic!("a symlinked staging folder was accepted");
    };
    assert!(e.to_string().contains(STAGING_DIR), "{e}");
}

#[test]
fn stores_in_nested_folders() {
    let (_t, s) = store();
    let got = put(&s, "a/b/c.txt", b"hi", OnClash::Rename).expect("stored");
    assert_eq!(got.stored_as, "a/b/c.txt");
    assert_eq!(got.clash, Clash::None);
    assert_eq!(fs::read(s.path().join("a/b/c.txt")).expect("read"), b"hi");
    assert!(staging_is_empty(&s));
}

#[test]
fn clash_renames_and_never_overwrites() {
    let (_t, s) = store();
    put(&s, "report.pdf", b"one", OnClash::Rename).expect("first");
    let second = put(&s, "report.pdf", b"two", OnClash::Rename).expect("second");
    assert_eq!(second.stored_as, "report (1).pdf");
    assert_eq!(second.clash, Clash::Renamed);
    let third = put(&s, "report.pdf", b"three", OnClash::Rename).expect("third");
    assert_eq!(third.stored_as, "report (2).pdf");
    assert_eq!(fs::read(s.path().join("report.pdf")).expect("read"), b"one");
}

/// An overwrite passes through a second name on its way in. That name
/// must never show in the folder: a crash between naming and renaming
/// would leave it there for good, where start-up cleaning never looks.
#[test]
fn an_overwrite_never_shows_a_second_name_in_the_folder() {
    let (_t, s) = store();
    // Without O_TMPFILE an overwrite is a plain rename from staging,
    // and there is no second name to look for.
    let nameless = rustix::fs::openat(
        &s.root,
        ".",
        OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    );
    if nameless.is_err() {
        eprintln!("skipped: no O_TMPFILE here");
        return;
    }
    put(&s, "f.txt", b"first", OnClash::Rename).expect("first");
    let done = AtomicBool::new(false);
    let seen = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            let mut seen = HashSet::new();
            while !done.load(Ordering::Relaxed) {
                for entry in fs::read_dir(s.path()).expect("ls").flatten() {
                    seen.insert(entry.file_name().to_string_lossy().into_owned());
                }
            }
            seen
        });
        for i in 0..2000u32 {
            put(&s, "f.txt", &i.to_le_bytes(), OnClash::Overwrite).expect("overwrite");
        }
        done.store(true, Ordering::Relaxed);
        watcher.join().expect("watcher")
    });
    let strays: Vec<_> = seen
        .iter()
        .filter(|name| *name != STAGING_DIR && *name != "f.txt")
        .collect();
    assert!(
        strays.is_empty(),
        "{} other names seen, such as {:?}",
        strays.len(),
        &strays[..strays.len().min(3)]
    );
    assert!(staging_is_empty(&s));
}

#[test]
fn overwrite_and_skip_identical() {
    let (_t, s) = store();
    put(&s, "x", b"old", OnClash::Rename).expect("first");
    let o = put(&s, "x", b"new", OnClash::Overwrite).expect("overwrite");
    assert_eq!(o.clash, Clash::Overwritten);
    assert_eq!(fs::read(s.path().join("x")).expect("read"), b"new");
    let same = put(&s, "x", b"new", OnClash::SkipIdentical).expect("same");
    assert_eq!(same.clash, Clash::Identical);
    let differ = put(&s, "x", b"other", OnClash::SkipIdentical).expect("differ");
    assert_eq!(differ.stored_as, "x (1)");
    assert!(staging_is_empty(&s));
}

/// A plan asking about one existing file many times over reads it once,
/// whatever digests it claims, and still answers each entry for itself.
#[test]
fn a_plan_reads_each_existing_file_once() {
    let (_t, s) = store();
    let bytes = vec![7u8; 1 << 20];
    put(&s, "big.bin", &bytes, OnClash::Rename).expect("existing");
    let right = blake3::hash(&bytes).to_hex().to_string();
    let files: Vec<PlanEntry> = (0..256)
        .map(|id| PlanEntry {
            id,
            path: "big.bin".into(),
            size: bytes.len() as u64,
            on_clash: OnClash::SkipIdentical,
            blake3: Some(if id == 0 {
                right.clone()
            } else {
                "00".repeat(32)
            }),
            resume_key: None,
        })
        .collect();
    let mut digests = Digests::default();
    let verdicts = s.verdicts_with(&files, &mut digests);
    assert_eq!(digests.files_read(), 1);
    assert_eq!(verdicts[0].verdict, Verdict::Identical);
    assert!(matches!(
        verdicts[1].verdict,
        Verdict::Clash {
            result: Clash::Renamed,
            ..
        }
    ));
    // Asked again only with wrong digests, it reads nothing: the file has
    // not changed. A claimed match is always read again.
    let wrong: Vec<PlanEntry> = files[1..].to_vec();
    let mut digests = Digests::default();
    let again = s.verdicts_with(&wrong, &mut digests);
    assert_eq!(digests.files_read(), 0);
    assert_eq!(again[..], verdicts[1..]);
    let mut digests = Digests::default();
    s.verdicts_with(&files[..1], &mut digests);
    assert_eq!(digests.files_read(), 1);
    // Changed in place (same size), it is read again, and no longer matches.
    fs::write(s.path().join("big.bin"), vec![8u8; 1 << 20]).expect("rewrite");
    let mut digests = Digests::default();
    let changed = s.verdicts_with(&files, &mut digests);
    assert_eq!(digests.files_read(), 1);
    assert!(matches!(changed[0].verdict, Verdict::Clash { .. }));
}

#[test]
fn group_commit_stores_every_file_and_resolves_clashes_in_order() {
    let (_t, s) = store();
    let batch = ["a/x.txt", "a/x.txt", "b/y.txt"]
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let bytes = format!("file {i}");
            let parts: Vec<&str> = path.split('/').collect();
            let mut upload = s
                .begin(&parts, 0, &mut FolderCache::default())
                .expect("begin");
            upload.write_all(bytes.as_bytes()).expect("write");
            Finished {
                upload,
                parts: path.split('/').map(String::from).collect(),
                policy: OnClash::Rename,
                digest: blake3::hash(bytes.as_bytes()),
            }
        })
        .collect();
    let via = s.sync_handle();
    s.sync(&via).expect("sync");
    let linked = s.link_group(batch);
    s.sync(&via).expect("sync");
    let stored: Vec<String> = linked
        .into_iter()
        .map(|r| r.expect("stored").stored_as)
        .collect();
    assert_eq!(stored, ["a/x.txt", "a/x (1).txt", "b/y.txt"]);
    assert_eq!(
        fs::read(s.path().join("a/x (1).txt")).expect("read"),
        b"file 1"
    );
    assert!(staging_is_empty(&s));
}

#[test]
fn the_staging_folder_stands_in_where_o_tmpfile_is_missing() {
    let (_t, mut s) = store();
    s.anonymous_temp = false;
    let mut up = s
        .begin(&["a", "b.txt"], 0, &mut FolderCache::default())
        .expect("begin");
    up.write_all(b"staged").expect("write");
    assert!(!staging_is_empty(&s), "the bytes live in staging meanwhile");
    drop(up);
    assert!(staging_is_empty(&s));
    put(&s, "a/b.txt", b"one", OnClash::Rename).expect("stored");
    put(&s, "a/b.txt", b"two", OnClash::Rename).expect("renamed");
    put(&s, "a/b.txt", b"three", OnClash::Overwrite).expect("replaced");
    assert_eq!(fs::read(s.path().join("a/b.txt")).expect("read"), b"three");
    assert_eq!(
        fs::read(s.path().join("a/b (1).txt")).expect("read"),
        b"two"
    );
    assert!(staging_is_empty(&s));
}

#[test]
fn dropped_upload_leaves_nothing() {
    let (_t, s) = store();
    let mut up = s
        .begin(&["partial.bin"], 0, &mut FolderCache::default())
        .expect("begin");
    up.write_all(b"partial").expect("write");
    drop(up);
    assert!(staging_is_empty(&s));
    let names: Vec<_> = fs::read_dir(s.path()).expect("ls").collect();
    assert_eq!(names.len(), 1, "only the staging folder");
}

#[test]
fn leftovers_are_cleaned_at_open() {
    let t = tempfile::tempdir().expect("tempdir");
    let up = t.path().join("up");
    fs::create_dir_all(up.join(STAGING_DIR)).expect("mkdir");
    fs::write(up.join(STAGING_DIR).join("9-9.part"), b"x").expect("write");
    let (_s, cleaned) = Store::open(&up, None, PARTIAL_TTL_DEFAULT).expect("open");
    assert_eq!(cleaned, 1);
}

#[test]
fn symlinks_and_files_on_the_way_are_refused() {
    let (t, s) = store();
    let outside = t.path().join("outside");
    fs::create_dir(&outside).expect("mkdir");
    std::os::unix::fs::symlink(&outside, s.path().join("link")).expect("symlink");
    fs::write(s.path().join("file"), b"x").expect("write");
    for path in ["link/x", "file/x"] {
        let parts = s.check_path(path).expect("valid name");
        assert!(
            matches!(
                s.begin(&parts, 0, &mut FolderCache::default()),
                Err(StoreError::BadName(_))
            ),
            "{path}"
        );
    }
    assert!(matches!(
        s.check_path(".ferry-staging/x"),
        Err(StoreError::BadName(_))
    ));
    // The final name being a symlink is not followed: it is a clash.
    std::os::unix::fs::symlink(outside.join("target"), s.path().join("last")).expect("symlink");
    let got = put(&s, "last", b"x", OnClash::Rename).expect("stored");
    assert_eq!(got.stored_as, "last (1)");
    assert!(!outside.join("target").exists());
    assert!(fs::read_dir(&outside).expect("ls").next().is_none());
}

#[test]
fn size_limits_are_checked_before_writing() {
    let t = tempfile::tempdir().expect("tempdir");
    let (s, _) = Store::open(t.path(), Some(10), PARTIAL_TTL_DEFAULT).expect("open");
    assert!(s.check_size(&[], 10).is_ok());
    assert!(matches!(
        s.check_size(&[], 11),
        Err(StoreError::TooLarge { .. })
    ));
    let (s, _) = Store::open(&t.path().join("b"), None, PARTIAL_TTL_DEFAULT).expect("open");
    assert!(matches!(
        s.check_size(&[], u64::MAX),
        Err(StoreError::NoSpace { .. })
    ));
}

#[test]
fn numbered_names() {
    assert_eq!(numbered("report.pdf", 1), "report (1).pdf");
    assert_eq!(numbered(".bashrc", 2), ".bashrc (2)");
    assert_eq!(numbered("noext", 3), "noext (3)");
    // At the length limit, the stem gives way, at a character boundary.
    let long = format!("{}.pdf", "é".repeat(125));
    let renamed = numbered(&long, 12);
    assert!(renamed.len() <= 255, "{} bytes", renamed.len());
    assert!(renamed.ends_with("é (12).pdf"), "{renamed}");
    let long_ext = format!("a.{}", "x".repeat(253));
    let renamed = numbered(&long_ext, 1);
    assert!(
        renamed.len() <= 255 && renamed.ends_with(" (1)"),
        "{renamed}"
    );
    // A family emoji is joined with zero-width joiners: a cut after one
    // would leave it dangling, which no name may do.
    let family = "\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}";
    for len in 240..=255 {
        let mut name = "e".repeat(len % 18);
        while name.len() + family.len() <= len {
            name.push_str(family);
        }
        ferry_proto::path::check_component(&name).expect("a valid name to start with");
        let renamed = numbered(&name, 3);
        ferry_proto::path::check_component(&renamed)
            .unwrap_or_else(|e| panic!("{renamed:?} from {len} bytes: {e}"));
    }
}

/// Keeps a partial of `path` holding `len` bytes, as an interrupted
/// resumable upload leaves it; returns the store's count of used bytes.
fn keep_partial(s: &Store, path: &str, key: &str, len: usize) {
    let parts = s.check_path(path).expect("path");
    let mut folders = FolderCache::default();
    let (mut up, _) = s
        .begin_resumable(&parts, &mut folders, key, 4 << 20, 0)
        .expect("begin");
    up.write_all(&vec![3u8; len]).expect("write");
}

fn partials(s: &Store) -> usize {
    fs::read_dir(s.path().join(STAGING_DIR))
        .expect("staging")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with(PARTIAL_PREFIX))
        })
        .count()
}

/// The sweep never locks a partial that is not due, so a resume running
/// beside it is never told the partial is busy.
#[test]
fn the_expiry_sweep_never_stands_in_the_way_of_a_resume() {
    let (_t, s) = store();
    keep_partial(&s, "big.bin", "k", 2 << 20);
    let parts = ["big.bin"];
    let stop = AtomicBool::new(false);
    let busy = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                s.expire_partials();
            }
        });
        let mut busy = 0;
        for _ in 0..500 {
            let mut folders = FolderCache::default();
            match s.begin_resumable(&parts, &mut folders, "k", 4 << 20, 2 << 20) {
                Ok((up, hash)) => drop((up, hash)),
                Err(StoreError::PartialBusy) => busy += 1,
                Err(e) => panic!("{e}"),
            }
        }
        stop.store(true, Ordering::Relaxed);
        busy
    });
    assert_eq!(busy, 0, "resumes refused as busy");
}

/// A partial's age is how long ago it was written, not the time its sender
/// gave the file (set on it before the commit that never came).
#[test]
fn a_partial_stamped_with_an_old_time_is_not_expired_early() {
    let (_t, s) = store();
    let parts = ["old.bin"];
    let (mut up, _) = s
        .begin_resumable(&parts, &mut FolderCache::default(), "k", 4 << 20, 0)
        .expect("begin");
    up.write_all(&[1u8; 1 << 20]).expect("write");
    up.set_mtime(1_500_000_000, 0).expect("2017");
    drop(up);
    assert_eq!(s.expire_partials(), 0);
    assert_eq!(partials(&s), 1);
}

/// An interrupted resumable upload that never got a byte leaves nothing.
#[test]
fn a_resumable_upload_dropped_before_its_first_byte_leaves_no_partial() {
    let (_t, s) = store();
    let (up, _) = s
        .begin_resumable(&["empty.bin"], &mut FolderCache::default(), "k", 4 << 20, 0)
        .expect("begin");
    drop(up);
    assert_eq!(partials(&s), 0);
    assert!(staging_is_empty(&s));
}

/// A plan refuses a file over the quota as the upload would: the quota is
/// the reason, not the disk.
#[test]
fn a_plan_over_the_quota_says_so() {
    let (_t, mut s) = store();
    s.set_quota(10).expect("quota");
    put(&s, "a.bin", &[1; 8], OnClash::Rename).expect("under the quota");
    let entry = |id, size| PlanEntry {
        id,
        path: format!("f{id}.bin"),
        size,
        on_clash: OnClash::Rename,
        blake3: None,
        resume_key: None,
    };
    let verdicts = s.verdicts_with(&[entry(0, 2), entry(1, 1)], &mut Digests::default());
    assert_eq!(verdicts[0].verdict, Verdict::New);
    let Verdict::Refused { code, message } = &verdicts[1].verdict else {
        panic!("{:?}", verdicts[1].verdict)
    };
    assert_eq!(*code, ferry_proto::ErrorCode::LimitReached, "{message}");
    assert!(message.contains("quota"), "{message}");
}

/// A partial dropped because its folder is now on a file system mounted
/// inside gives its room back to the quota.
#[test]
fn a_partial_dropped_for_a_mount_gives_its_room_back() {
    let (_t, mut s) = store();
    fs::create_dir(s.path().join("sub")).expect("mkdir");
    s.set_quota(64 << 20).expect("quota");
    keep_partial(&s, "sub/big.bin", "k", 1 << 20);
    assert_eq!(s.used.load(Ordering::Relaxed), 1 << 20);
    let Some(_mnt) = Mounted::at(&s.path().join("sub")) else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let resumed = s.begin_resumable(
        &["sub", "big.bin"],
        &mut FolderCache::default(),
        "k",
        4 << 20,
        1 << 20,
    );
    assert!(matches!(resumed, Err(StoreError::Unresumable(_))));
    assert_eq!(partials(&s), 0);
    assert_eq!(s.used.load(Ordering::Relaxed), 0);
}

/// Overwrites racing for one name take the old file off the quota once,
/// not once each: the count keeps matching what is on disk.
#[test]
fn racing_overwrites_keep_the_quota_count_true() {
    let (_t, mut s) = store();
    s.set_quota(64 << 20).expect("quota");
    put(&s, "y.bin", &[7u8; 1000], OnClash::Rename).expect("y");
    for _ in 0..20 {
        put(&s, "x.bin", &[1u8; 30_000], OnClash::Overwrite).expect("x grows");
        std::thread::scope(|scope| {
            for _ in 0..6 {
                scope.spawn(|| put(&s, "x.bin", b"z", OnClash::Overwrite).expect("overwrite"));
            }
        });
    }
    let on_disk: u64 = ["x.bin", "y.bin"]
        .iter()
        .map(|n| fs::metadata(s.path().join(n)).expect("there").len())
        .sum();
    assert_eq!(s.used.load(Ordering::Relaxed), on_disk);
}

/// Big bodies go around the page cache where buffer, length and offset
/// line up, and through it where any does not; mixing the two, in any
/// order, must store exactly the bytes written.
#[test]
fn chunks_written_around_the_cache_and_through_it_store_the_same_bytes() {
    let (_dir, s) = store();
    // A buffer with a lined-up start inside it, and one a byte off.
    let mut buffer = vec![0u8; 3 * DIRECT_ALIGN + 2 * (1 << 16)];
    let start = aligned_start(&buffer);
    for (i, b) in buffer.iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    let aligned = &buffer[start..start + (1 << 16)];
    let off_by_one = &buffer[start + 1..start + 1 + (1 << 16)];
    let tail = &buffer[start..start + 1000];
    // Lined up; a misaligned buffer; lined up again (the offset still is);
    // a short tail, which leaves the offset unaligned; then a lined-up
    // buffer at an unaligned offset.
    let pieces: [&[u8]; 5] = [aligned, off_by_one, aligned, tail, aligned];
    let want: Vec<u8> = pieces.concat();
    let parts = s.check_path("direct.bin").expect("name");
    let mut up = s
        .begin(&parts, want.len() as u64, &mut FolderCache::default())
        .expect("begin");
    for piece in pieces {
        up.write_chunk(piece).expect("write");
    }
    assert_ne!(
        up.direct,
        upload::Direct::On,
        "the last write was not lined up"
    );
    up.commit(&parts, OnClash::Rename, &blake3::hash(&want))
        .expect("stored");
    assert_eq!(fs::read(s.path().join("direct.bin")).expect("read"), want);
}
