//! Shell steps' log files, made cheap for the steps that print nothing.
//!
//! A shell step writes stdout and stderr straight into a file, not a pipe,
//! so that a server it leaves running in the background keeps a valid
//! descriptor. Making a named file per step costs an inode and a directory
//! entry: about 20 µs on ext4, and several times that for minutes after
//! many files were deleted nearby. For a DAG of short steps that is most
//! of the executor's own cost per step.
//!
//! On Linux a step therefore writes to an unnamed file (`O_TMPFILE`) in the
//! run's log directory, which gets its name, `<step>.log`, as soon as any of
//! these holds:
//! - the step has run for [`NAME_AFTER`] (so a long step's log can be
//!   followed while it runs, and survives a `kill -9` of mlops);
//! - the step ended and wrote something (or mlops wrote a line to it);
//! - the step ended and something it started may still write to it.
//!
//! A step that ended having written nothing, with nothing left holding its
//! output, hands its file on to the next step: no inode is allocated and no
//! directory entry is made, and the step reports no log (as an in-process
//! step that writes no line does).
//!
//! "Nothing left holding its output" is known, not guessed: the step gets a
//! file description of its own, opened anew through `/proc/self/fd`, never
//! shared with mlops; inotify reports `IN_CLOSE_WRITE` when the last holder
//! of such a description, wherever it is, lets go of it. A file is handed
//! on only when every description given out for it was closed and the
//! step's process group is gone. Wherever any of this is missing (not
//! Linux, no `O_TMPFILE` on the file system, no inotify, no `/proc`), the
//! step gets a named file from the start, as everywhere before.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a step writes to an unnamed file before it is named anyway.
pub(crate) const NAME_AFTER: Duration = Duration::from_millis(50);

/// What identifies an unnamed file's inotify watch (nothing can, where
/// there are no unnamed files).
#[cfg(target_os = "linux")]
type Watch = nix::sys::inotify::WatchDescriptor;
#[cfg(not(target_os = "linux"))]
type Watch = std::convert::Infallible;

/// The log files of one run's shell steps.
pub(crate) struct LogFiles {
    #[cfg(target_os = "linux")]
    unnamed: Option<unnamed::Unnamed>,
}

impl LogFiles {
    /// Log files in `dir` (which exists).
    pub(crate) fn new(dir: &Path) -> LogFiles {
        #[cfg(not(target_os = "linux"))]
        let _ = dir;
        LogFiles {
            #[cfg(target_os = "linux")]
            unnamed: unnamed::Unnamed::new(dir),
        }
    }

    /// The log of a step, to be named `path` (in the directory given to
    /// [`LogFiles::new`]). `None` when no file can be made: logging is best
    /// effort, and the step then writes to `/dev/null`.
    pub(crate) fn open(&self, path: PathBuf) -> Option<ShellLog<'_>> {
        #[cfg(target_os = "linux")]
        let unnamed = self.unnamed.as_ref().and_then(unnamed::Unnamed::take);
        #[cfg(not(target_os = "linux"))]
        let unnamed: Option<(File, Watch)> = None;
        let (file, watch) = match unnamed {
            Some((file, watch)) => (file, Some(watch)),
            None => (File::create(&path).ok()?, None),
        };
        Some(ShellLog {
            files: self,
            path,
            file: Some(file),
            watch,
            given: 0,
            shared: false,
            left_running: false,
        })
    }
}

/// One shell step's log, named or not yet.
pub(crate) struct ShellLog<'a> {
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    files: &'a LogFiles,
    path: PathBuf,
    /// mlops's own description of the file (appending when unnamed);
    /// `None` once handed on.
    file: Option<File>,
    /// The inotify watch of a file that has no name yet.
    watch: Option<Watch>,
    /// Descriptions of its own given to the step's processes.
    given: u32,
    /// Whether a step's process got a share of mlops's own description
    /// (whose closing cannot be observed).
    shared: bool,
    /// Whether an attempt left members of its process group alive.
    left_running: bool,
}

impl ShellLog<'_> {
    /// Whether the file has its name.
    pub(crate) fn is_named(&self) -> bool {
        self.watch.is_none()
    }

    /// A description of the file for the step's stdout and stderr.
    pub(crate) fn for_child(&mut self) -> Option<File> {
        let file = self.file.as_ref()?;
        #[cfg(target_os = "linux")]
        if !self.is_named()
            && let Some(own) = unnamed::reopen(file)
        {
            self.given += 1;
            return Some(own);
        }
        self.shared = true;
        file.try_clone().ok()
    }

    /// Gives the file its name, once. Best effort: a file that cannot be
    /// named loses its output, as one that could not be made did.
    pub(crate) fn name(&mut self) {
        #[cfg(target_os = "linux")]
        if let Some(watch) = self.watch.take() {
            if let Some(unnamed) = &self.files.unnamed {
                unnamed.forget(watch);
            }
            if let Some(file) = &self.file
                && !unnamed::link(file, &self.path)
            {
                self.file = None;
            }
        }
    }

    /// Records that an attempt left members of its process group alive.
    pub(crate) fn left_running(&mut self) {
        self.left_running = true;
    }

    /// A line of mlops's own in the log (e.g. between attempts).
    pub(crate) fn line(&mut self, line: &str) {
        if let Some(file) = &mut self.file {
            // Logging is best effort: a full disk must not fail the step.
            let _ = writeln!(file, "{line}");
        }
    }

    /// Ends the log once the step's last attempt is over. Returns the log's
    /// path if it has one; an empty file that nothing holds any more is
    /// handed on to the next step instead.
    pub(crate) fn finish(mut self) -> Option<PathBuf> {
        #[cfg(target_os = "linux")]
        if let (Some(watch), Some(unnamed), Some(file)) =
            (self.watch, &self.files.unnamed, &self.file)
        {
            let empty = file.metadata().is_ok_and(|m| m.len() == 0);
            if empty && !self.left_running && !self.shared && unnamed.all_closed(watch, self.given)
            {
                self.watch = None;
                if let Some(file) = self.file.take() {
                    unnamed.give_back(file, watch);
                }
                return None;
            }
        }
        self.name();
        self.file.is_some().then(|| std::mem::take(&mut self.path))
    }
}

/// What a shell attempt (`crate::process::run_shell`) does with the log
/// while it has no name.
impl crate::process::PendingLog for ShellLog<'_> {
    fn name_after(&self) -> Duration {
        NAME_AFTER
    }

    fn is_named(&self) -> bool {
        ShellLog::is_named(self)
    }

    fn name(&mut self) {
        ShellLog::name(self);
    }

    fn left_running(&mut self) {
        ShellLog::left_running(self);
    }
}

impl Drop for ShellLog<'_> {
    fn drop(&mut self) {
        // A step whose future was dropped half-way keeps what it wrote.
        self.name();
    }
}

#[cfg(target_os = "linux")]
mod unnamed {
    use std::collections::HashMap;
    use std::fs::{File, OpenOptions};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use nix::errno::Errno;
    use nix::fcntl::{AT_FDCWD, AtFlags, OFlag};
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
    use nix::unistd::linkat;

    /// Unnamed files, the spares among them, and what inotify reported.
    pub(super) struct Unnamed {
        dir: PathBuf,
        inotify: Inotify,
        /// Cleared when the file system refuses unnamed files: the run
        /// goes on with named ones.
        works: AtomicBool,
        state: Mutex<State>,
    }

    #[derive(Default)]
    struct State {
        /// Empty files nobody holds, ready for the next step.
        spare: Vec<(File, WatchDescriptor)>,
        /// Writable descriptions closed per watched file, since it was
        /// last handed out.
        closed: HashMap<WatchDescriptor, u32>,
    }

    /// The path through which a descriptor's file can be opened anew.
    fn proc_path(file: &File) -> String {
        format!("/proc/self/fd/{}", file.as_raw_fd())
    }

    impl Unnamed {
        pub(super) fn new(dir: &Path) -> Option<Unnamed> {
            if !Path::new("/proc/self/fd").is_dir() {
                return None;
            }
            let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok()?;
            Some(Unnamed {
                dir: dir.to_path_buf(),
                inotify,
                works: AtomicBool::new(true),
                state: Mutex::new(State::default()),
            })
        }

        fn state(&self) -> std::sync::MutexGuard<'_, State> {
            self.state.lock().unwrap_or_else(|e| e.into_inner())
        }

        /// A spare file, or a new unnamed one with its watch.
        pub(super) fn take(&self) -> Option<(File, WatchDescriptor)> {
            let mut state = self.state();
            if let Some((file, watch)) = state.spare.pop() {
                state.closed.insert(watch, 0);
                return Some((file, watch));
            }
            drop(state);
            if !self.works.load(Ordering::Relaxed) {
                return None;
            }
            let file = OpenOptions::new()
                .read(true)
                .append(true)
                .mode(0o644)
                .custom_flags(OFlag::O_TMPFILE.bits())
                .open(&self.dir);
            let file = match file {
                Ok(f) => f,
                Err(_) => {
                    self.works.store(false, Ordering::Relaxed);
                    return None;
                }
            };
            let watch = self
                .inotify
                .add_watch(proc_path(&file).as_str(), AddWatchFlags::IN_CLOSE_WRITE);
            match watch {
                Ok(watch) => {
                    self.state().closed.insert(watch, 0);
                    Some((file, watch))
                }
                // Out of watches: this step gets a named file.
                Err(_) => None,
            }
        }

        /// Whether `given` writable descriptions of the watched file were
        /// closed since it was handed out.
        pub(super) fn all_closed(&self, watch: WatchDescriptor, given: u32) -> bool {
            let mut state = self.state();
            loop {
                match self.inotify.read_events() {
                    Ok(events) => {
                        let many = events.len();
                        for e in events {
                            if e.mask.contains(AddWatchFlags::IN_CLOSE_WRITE)
                                && let Some(n) = state.closed.get_mut(&e.wd)
                            {
                                *n += 1;
                            }
                        }
                        // A read returns what is queued, up to its buffer
                        // (4 KiB: 256 events); fewer means the queue is
                        // drained.
                        if many < 200 {
                            break;
                        }
                    }
                    Err(Errno::EINTR) => {}
                    Err(_) => break,
                }
            }
            state.closed.get(&watch).is_some_and(|&n| n >= given)
        }

        /// Takes a file back as a spare.
        pub(super) fn give_back(&self, file: File, watch: WatchDescriptor) {
            self.state().spare.push((file, watch));
        }

        /// Stops watching a file that got its name.
        pub(super) fn forget(&self, watch: WatchDescriptor) {
            self.state().closed.remove(&watch);
            let _ = self.inotify.rm_watch(watch);
        }
    }

    /// A new writable (appending) description of `file`.
    pub(super) fn reopen(file: &File) -> Option<File> {
        OpenOptions::new().append(true).open(proc_path(file)).ok()
    }

    /// Names an unnamed file `path`, replacing a file left there (by an
    /// interrupted attempt of a resumed run). Whether it worked.
    pub(super) fn link(file: &File, path: &Path) -> bool {
        let from = proc_path(file);
        let link = || {
            linkat(
                AT_FDCWD,
                from.as_str(),
                AT_FDCWD,
                path,
                AtFlags::AT_SYMLINK_FOLLOW,
            )
        };
        match link() {
            Ok(()) => true,
            Err(Errno::EEXIST) => std::fs::remove_file(path).is_ok() && link().is_ok(),
            Err(_) => false,
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::io::Write as _;
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn inode(log: &ShellLog<'_>) -> u64 {
        log.file.as_ref().unwrap().metadata().unwrap().ino()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn an_empty_file_nobody_holds_goes_to_the_next_step() {
        let dir = tempfile::tempdir().unwrap();
        let files = LogFiles::new(dir.path());
        let mut a = files.open(dir.path().join("a.log")).unwrap();
        assert!(!a.is_named(), "this file system has unnamed files");
        let first = inode(&a);
        drop(a.for_child().unwrap());
        assert_eq!(a.finish(), None);
        let b = files.open(dir.path().join("b.log")).unwrap();
        assert_eq!(inode(&b), first, "the spare is reused");
        assert_eq!(names(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn a_file_still_held_elsewhere_is_named_and_keeps_later_output() {
        let dir = tempfile::tempdir().unwrap();
        let files = LogFiles::new(dir.path());
        let mut a = files.open(dir.path().join("a.log")).unwrap();
        let first = inode(&a);
        let mut held = a.for_child().unwrap();
        let path = a.finish().expect("named: something may still write");
        writeln!(held, "late").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "late\n");
        // Not handed on: the next step gets a file of its own.
        let b = files.open(dir.path().join("b.log")).unwrap();
        assert_ne!(inode(&b), first);
    }

    #[test]
    fn a_file_written_to_or_left_behind_by_the_group_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let files = LogFiles::new(dir.path());

        let mut a = files.open(dir.path().join("a.log")).unwrap();
        writeln!(a.for_child().unwrap(), "said").unwrap();
        let path = a.finish().unwrap();
        assert_eq!(std::fs::read_to_string(path).unwrap(), "said\n");

        let mut b = files.open(dir.path().join("b.log")).unwrap();
        drop(b.for_child().unwrap());
        b.left_running();
        assert_eq!(b.finish(), Some(dir.path().join("b.log")));

        // A file with no name yet is named in place, replacing what an
        // interrupted attempt left.
        std::fs::write(dir.path().join("c.log"), "stale").unwrap();
        let mut c = files.open(dir.path().join("c.log")).unwrap();
        c.line("fresh");
        assert_eq!(names(dir.path()), ["a.log", "b.log", "c.log"]);
        assert_eq!(c.finish(), Some(dir.path().join("c.log")));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("c.log")).unwrap(),
            "fresh\n"
        );
    }
}
