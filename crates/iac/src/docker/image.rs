//! A service's image: built from a binary (`FROM scratch`, the binary at
//! `/app/<name>`, every shared library `ldd` lists at its own path, the
//! extra files under `/app/`) or from a Dockerfile and its context, both as
//! a tar made in memory; or an image already in the engine.
//!
//! Built images are tagged `mlops-<project>-<service>:<revision>` and
//! labelled with the project, service and revision only: not with an
//! environment or instance, because every instance and environment of a
//! revision shares the image, and fixed labels keep a rebuild of the same
//! revision on the builder's cache (the same image id, so running
//! containers do not look drifted). Nothing is pulled.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};

use bollard::errors::Error as DockerError;
use bollard::query_parameters::{BuildImageOptionsBuilder, RemoveImageOptionsBuilder};
use futures_util::StreamExt;
use tar::{EntryType, Header, HeaderMode};

use super::{DockerProvider, describe, image_tag, labels, tail_lines};
use crate::provider::{Desired, ProviderError, Scope};
use crate::spec::BuildSpec;

/// How many lines of build output an error carries.
const OUTPUT_TAIL: usize = 30;
/// Where the Dockerfile goes in a context that does not hold it.
const OUTSIDE_DOCKERFILE: &str = ".mlops/Dockerfile";

/// The image a service's containers are created from.
#[derive(Debug, Clone)]
pub(super) struct ServiceImage {
    /// The reference: the mlops tag, or the spec's `image`.
    pub(super) reference: String,
    /// Its id (`sha256:…`).
    pub(super) id: String,
}

/// A build context: a tar and the path of the Dockerfile in it.
struct BuildContext {
    tar: Vec<u8>,
    dockerfile: String,
    /// Whether the Dockerfile sets the image's labels itself.
    labelled: bool,
}

/// The file name of a `Binary` build's binary (the command's first word
/// names it).
pub(super) fn binary_name(build: Option<&BuildSpec>) -> Option<String> {
    match build {
        Some(BuildSpec::Binary { binary, .. }) => {
            binary.file_name().map(|n| n.to_string_lossy().into_owned())
        }
        _ => None,
    }
}

impl DockerProvider {
    /// Builds the service's image (or finds the one it names).
    pub(super) async fn ensure_image(
        &self,
        scope: &Scope,
        desired: &Desired,
    ) -> Result<ServiceImage, ProviderError> {
        let spec = &desired.spec;
        let invalid = |detail: String| ProviderError::Invalid {
            service: spec.name.clone(),
            detail,
        };
        let context = match &spec.build {
            None => {
                return Err(invalid(
                    "the docker provider needs `build`: a binary (`build = { binary = \"target/release/app\" }`), \
                     a Dockerfile (`build = { dockerfile = \"Dockerfile\" }`) or an image in the engine (`build = { image = \"name:tag\" }`)"
                        .to_owned(),
                ));
            }
            Some(BuildSpec::Image { image }) => {
                return match self.docker.inspect_image(image).await {
                    Ok(found) => Ok(ServiceImage {
                        reference: image.clone(),
                        id: found.id.unwrap_or_else(|| image.clone()),
                    }),
                    Err(DockerError::DockerResponseServerError {
                        status_code: 404, ..
                    }) => Err(invalid(format!(
                        "image `{image}` is not in the Docker engine, and images are not pulled: build or load it first"
                    ))),
                    Err(e) => Err(self.engine_error(format!("inspecting image {image}"))(e)),
                };
            }
            Some(BuildSpec::Binary { binary, files }) => {
                let binary = scope.root.join(binary);
                if !binary.is_file() {
                    return Err(invalid(format!(
                        "the binary {} does not exist: build it first",
                        binary.display()
                    )));
                }
                let mut extra = Vec::new();
                for file in files {
                    let source = scope.root.join(file);
                    if !source.exists() {
                        return Err(invalid(format!(
                            "{} (in `build.files`) does not exist",
                            source.display()
                        )));
                    }
                    extra.push((source, file.clone()));
                }
                check_user(&spec.user).map_err(invalid)?;
                let libraries = shared_libraries(&binary)
                    .await
                    .map_err(|(detail, output)| ProviderError::Build {
                        service: spec.name.clone(),
                        detail,
                        output,
                    })?;
                let user = spec.user.clone();
                let what = binary.display().to_string();
                let image_labels = image_labels(scope, desired);
                tokio::task::spawn_blocking(move || {
                    binary_context(&binary, &libraries, &extra, &user, &image_labels)
                })
                .await
                .map_err(|e| invalid(format!("making the build context of {what}: {e}")))?
                .map_err(|e| invalid(format!("making the build context of {what}: {e}")))?
            }
            Some(BuildSpec::Dockerfile {
                dockerfile,
                context,
            }) => {
                let dockerfile = scope.root.join(dockerfile);
                let context = scope.root.join(context);
                if !dockerfile.is_file() {
                    return Err(invalid(format!(
                        "the Dockerfile {} does not exist",
                        dockerfile.display()
                    )));
                }
                if !context.is_dir() {
                    return Err(invalid(format!(
                        "the build context {} is not a directory",
                        context.display()
                    )));
                }
                let what = context.display().to_string();
                tokio::task::spawn_blocking(move || dockerfile_context(&context, &dockerfile))
                    .await
                    .map_err(|e| invalid(format!("making the build context {what}: {e}")))?
                    .map_err(|e| invalid(format!("making the build context {what}: {e}")))?
            }
        };
        let tag = image_tag(&scope.project, &spec.name, &desired.revision);
        let id = self
            .build(&spec.name, &tag, &image_labels(scope, desired), context)
            .await?;
        Ok(ServiceImage { reference: tag, id })
    }

    /// Sends a context to the engine's builder, drains its output, and
    /// returns the new image's id. A failing step is `Build` with the tail
    /// of the output; the images of the steps this build made before it
    /// failed are removed (the builder keeps them as cache).
    async fn build(
        &self,
        service: &str,
        tag: &str,
        image_labels: &BTreeMap<&str, String>,
        context: BuildContext,
    ) -> Result<String, ProviderError> {
        let mut options = BuildImageOptionsBuilder::default()
            .dockerfile(&context.dockerfile)
            .t(tag)
            .rm(true)
            .forcerm(true);
        if !context.labelled {
            // The classic builder adds one LABEL step per label.
            let labels: HashMap<&str, &str> =
                image_labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            options = options.labels(&labels);
        }
        let result = self
            .run_build(service, tag, options.build(), context.tar)
            .await;
        if let Err((_, output)) = &result {
            for step in new_step_images(output).iter().rev() {
                let _ = self
                    .docker
                    .remove_image(
                        step,
                        Some(RemoveImageOptionsBuilder::default().build()),
                        None,
                    )
                    .await;
            }
        }
        result.map_err(|(e, _)| e)
    }

    async fn run_build(
        &self,
        service: &str,
        tag: &str,
        options: bollard::query_parameters::BuildImageOptions,
        tar: Vec<u8>,
    ) -> Result<String, (ProviderError, String)> {
        let mut stream =
            self.docker
                .build_image(options, None, Some(bollard::body_full(tar.into())));
        let mut output = String::new();
        let failed = |detail: String, output: String| {
            let error = ProviderError::Build {
                service: service.to_owned(),
                detail,
                output: tail_lines(&output, OUTPUT_TAIL),
            };
            (error, output)
        };
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(text) = info.stream {
                        output.push_str(&text);
                    }
                    if let Some(status) = info.status {
                        output.push_str(&status);
                        output.push('\n');
                    }
                }
                Err(DockerError::DockerStreamError { error }) => {
                    return Err(failed(error.trim().to_owned(), output));
                }
                Err(e @ DockerError::DockerResponseServerError { .. }) => {
                    return Err(failed(describe(&e), output));
                }
                Err(e) => {
                    let error = self.engine_error(format!("building image {tag}"))(e);
                    return Err((error, output));
                }
            }
        }
        match self.docker.inspect_image(tag).await {
            Ok(image) => Ok(image.id.unwrap_or_else(|| tag.to_owned())),
            Err(e) => Err(failed(
                format!("the build ended without image {tag}: {}", describe(&e)),
                output,
            )),
        }
    }
}

/// The labels of a built image (see the module's doc for why there is no
/// environment or instance among them).
fn image_labels<'a>(scope: &Scope, desired: &Desired) -> BTreeMap<&'a str, String> {
    let mut image_labels = BTreeMap::from([
        (labels::MANAGED_BY, labels::MANAGED_BY_VALUE.to_owned()),
        (labels::PROJECT, scope.project.clone()),
        (labels::SERVICE, desired.spec.name.clone()),
        (labels::REVISION, desired.revision.clone()),
    ]);
    if let Some(model) = &desired.model {
        image_labels.insert(labels::MODEL_VERSION, model.version.clone());
    }
    image_labels
}

/// The ids of the step images a (failed) classic build made, in order:
/// ` ---> 0123456789ab` after a `Step` line, unless the step came from the
/// cache (` ---> Using cache`), which this build did not make.
fn new_step_images(output: &str) -> Vec<String> {
    let mut made = Vec::new();
    let mut cached = false;
    for line in output.lines().map(str::trim) {
        if line.starts_with("Step ") {
            cached = false;
        } else if line == "---> Using cache" {
            cached = true;
        } else if let Some(id) = line.strip_prefix("---> ")
            && id.len() == 12
            && id.chars().all(|c| c.is_ascii_hexdigit())
            && !cached
        {
            made.push(id.to_owned());
        }
    }
    made
}

/// A Dockerfile string in double quotes.
fn quoted(text: &str) -> String {
    let escaped: String = text
        .chars()
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            '\n' | '\r' => vec![' '],
            c => vec![c],
        })
        .collect();
    format!("\"{escaped}\"")
}

/// A user for `USER`: `name`, `uid` or `uid:gid` (no spaces or newlines
/// that would change the Dockerfile).
fn check_user(user: &str) -> Result<(), String> {
    if !user.is_empty()
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
    {
        Ok(())
    } else {
        Err(format!(
            "invalid user `{user}`: use a name, a uid or uid:gid"
        ))
    }
}

/// The shared libraries `binary` loads, the dynamic loader included, as
/// `ldd` resolves them on this machine. A statically linked binary has
/// none. Errors carry a message and `ldd`'s output.
async fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, (String, String)> {
    let output = tokio::process::Command::new("ldd")
        .arg(binary)
        .output()
        .await
        .map_err(|e| {
            (
                format!(
                    "cannot run `ldd` to list the shared libraries of {}: {e}",
                    binary.display()
                ),
                String::new(),
            )
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let text = format!("{stdout}{stderr}");
    if !output.status.success() {
        if text.contains("not a dynamic executable") {
            return Ok(Vec::new());
        }
        return Err((
            format!("`ldd {}` failed ({})", binary.display(), output.status),
            text,
        ));
    }
    parse_ldd(&stdout).map_err(|missing| {
        (
            format!(
                "{} needs shared libraries this machine does not have: {}",
                binary.display(),
                missing.join(", ")
            ),
            text.clone(),
        )
    })
}

/// The library paths in `ldd` output, or the names it could not find.
fn parse_ldd(stdout: &str) -> Result<Vec<PathBuf>, Vec<String>> {
    let mut found = BTreeSet::new();
    let mut missing = Vec::new();
    for line in stdout.lines().map(str::trim) {
        let target = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    missing.push(name.trim().to_owned());
                    continue;
                }
                rest
            }
            // The loader (`/lib64/ld-linux-x86-64.so.2 (0x…)`) or the vDSO.
            None => line,
        };
        if let Some(path) = target
            .split_whitespace()
            .next()
            .filter(|p| p.starts_with('/'))
        {
            found.insert(PathBuf::from(path));
        }
    }
    if missing.is_empty() {
        Ok(found.into_iter().collect())
    } else {
        Err(missing)
    }
}

fn tar_builder() -> tar::Builder<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    // Fixed owners and times, modes 0644/0755: the same input gives the
    // same context (and the builder's cache), and a non-root user can read
    // everything.
    tar.mode(HeaderMode::Deterministic);
    tar.follow_symlinks(true);
    // Docker's extractor rejects GNU sparse entries ("unhandled tar header
    // type 83"), which the tar crate writes for files with holes.
    tar.sparse(false);
    tar
}

fn header(kind: EntryType, size: u64, mode: u32) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(mode);
    header.set_mtime(tar::DETERMINISTIC_TIMESTAMP);
    header.set_uid(0);
    header.set_gid(0);
    header.set_cksum();
    header
}

/// Adds `source`'s content (symlinks followed) at `name` with `mode`.
fn append_file(
    tar: &mut tar::Builder<Vec<u8>>,
    source: &Path,
    name: &Path,
    mode: u32,
) -> io::Result<()> {
    let bytes = std::fs::read(source)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", source.display())))?;
    let mut header = header(EntryType::Regular, bytes.len() as u64, mode);
    tar.append_data(&mut header, name, bytes.as_slice())
}

/// The context of a `Binary` build: a generated Dockerfile and `rootfs/`.
fn binary_context(
    binary: &Path,
    libraries: &[PathBuf],
    files: &[(PathBuf, PathBuf)],
    user: &str,
    image_labels: &BTreeMap<&str, String>,
) -> io::Result<BuildContext> {
    let name = binary
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "app".to_owned());
    // Without /etc/ld.so.cache the loader searches only its built-in
    // directories; name any other directory ldd resolved a library in.
    let mut library_dirs: Vec<String> = libraries
        .iter()
        .filter_map(|l| l.parent())
        .filter(|d| !is_default_library_dir(d))
        .map(|d| d.display().to_string())
        .collect();
    library_dirs.sort();
    library_dirs.dedup();
    // Every instruction after COPY is a step (a container committed), so
    // there are few: the labels go on one line.
    let mut dockerfile = String::from("FROM scratch\nCOPY rootfs/ /\n");
    if !library_dirs.is_empty() {
        dockerfile.push_str(&format!(
            "ENV LD_LIBRARY_PATH={}\n",
            quoted(&library_dirs.join(":"))
        ));
    }
    dockerfile.push_str(&format!("WORKDIR /app\nUSER {user}\nLABEL"));
    for (key, value) in image_labels {
        dockerfile.push_str(&format!(" {key}={}", quoted(value)));
    }
    dockerfile.push('\n');

    let mut tar = tar_builder();
    let mut h = header(EntryType::Regular, dockerfile.len() as u64, 0o644);
    tar.append_data(&mut h, "Dockerfile", dockerfile.as_bytes())?;
    for dir in ["rootfs/app", "rootfs/tmp"] {
        let mode = if dir.ends_with("tmp") { 0o1777 } else { 0o755 };
        let mut h = header(EntryType::Directory, 0, mode);
        tar.append_data(&mut h, dir, io::empty())?;
    }
    append_file(
        &mut tar,
        binary,
        &Path::new("rootfs/app").join(&name),
        0o755,
    )?;
    for library in libraries {
        let inside = library.strip_prefix("/").unwrap_or(library);
        append_file(&mut tar, library, &Path::new("rootfs").join(inside), 0o755)?;
    }
    for (source, relative) in files {
        let name = Path::new("rootfs/app").join(relative);
        if source.is_dir() {
            tar.append_dir_all(&name, source)?;
        } else {
            tar.append_path_with_name(source, &name)?;
        }
    }
    Ok(BuildContext {
        tar: tar.into_inner()?,
        dockerfile: "Dockerfile".to_owned(),
        labelled: true,
    })
}

/// Whether the dynamic loader searches `dir` without being told: `/lib`,
/// `/usr/lib`, their `64` variants and multiarch subdirectories
/// (`/lib/x86_64-linux-gnu`).
fn is_default_library_dir(dir: &Path) -> bool {
    let text = dir.to_string_lossy();
    let text = text.strip_prefix("/usr").unwrap_or(&text);
    match text
        .strip_prefix("/lib64")
        .or_else(|| text.strip_prefix("/lib"))
    {
        Some("") => true,
        Some(rest) => rest
            .strip_prefix('/')
            .is_some_and(|triplet| !triplet.contains('/') && triplet.contains("-linux-")),
        None => false,
    }
}

/// The context of a `Dockerfile` build: the context directory without its
/// `.git` and `.mlops` (the ledger and logs are no image's business), and
/// the Dockerfile, added at `.mlops/Dockerfile` when it lies outside.
fn dockerfile_context(context: &Path, dockerfile: &Path) -> io::Result<BuildContext> {
    let context = context.canonicalize()?;
    let dockerfile = dockerfile.canonicalize()?;
    let skipped = |name: &std::ffi::OsStr| name == ".git" || name == ".mlops";
    let mut tar = tar_builder();
    let mut entries: Vec<_> = std::fs::read_dir(&context)?.collect::<io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        if skipped(&name) {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            tar.append_dir_all(&name, &path)?;
        } else {
            tar.append_path_with_name(&path, &name)?;
        }
    }
    let inside = dockerfile.strip_prefix(&context).ok().filter(|rel| {
        rel.components()
            .next()
            .is_some_and(|c| !skipped(c.as_os_str()))
    });
    let dockerfile_name = match inside {
        Some(rel) => rel.to_string_lossy().into_owned(),
        None => {
            append_file(&mut tar, &dockerfile, Path::new(OUTSIDE_DOCKERFILE), 0o644)?;
            OUTSIDE_DOCKERFILE.to_owned()
        }
    };
    Ok(BuildContext {
        tar: tar.into_inner()?,
        dockerfile: dockerfile_name,
        labelled: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(out).unwrap(),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert_eq!(
            parse_ldd("\tlibfoo.so.1 => not found\n\tlibc.so.6 => /lib/libc.so.6 (0x1)\n")
                .unwrap_err(),
            vec!["libfoo.so.1".to_owned()]
        );
        assert_eq!(
            parse_ldd("\tstatically linked\n").unwrap(),
            Vec::<PathBuf>::new()
        );
    }

    #[test]
    fn users() {
        assert!(check_user("65534:65534").is_ok());
        assert!(check_user("nobody").is_ok());
        assert!(check_user("1000\nRUN rm -rf /").is_err());
        assert!(check_user("").is_err());
    }

    #[test]
    fn binary_context_layout() {
        let dir = tempfile::tempdir().unwrap();
        let binary = dir.path().join("server");
        std::fs::write(&binary, b"\x7fELF").unwrap();
        std::fs::create_dir(dir.path().join("conf")).unwrap();
        std::fs::write(dir.path().join("conf/a.toml"), b"a = 1").unwrap();
        let context = binary_context(
            &binary,
            &[PathBuf::from("/bin/sh")],
            &[(dir.path().join("conf"), PathBuf::from("conf"))],
            "65534:65534",
            &BTreeMap::from([
                ("mlops.project", "a \"b\"".to_owned()),
                ("mlops.revision", "r1".to_owned()),
            ]),
        )
        .unwrap();
        let mut archive = tar::Archive::new(context.tar.as_slice());
        let mut names = Vec::new();
        let mut dockerfile = String::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            if path == "Dockerfile" {
                io::Read::read_to_string(&mut entry, &mut dockerfile).unwrap();
            }
            if path == "rootfs/app/server" {
                assert_eq!(entry.header().mode().unwrap(), 0o755);
            }
            names.push(path);
        }
        assert!(names.contains(&"rootfs/app/server".to_owned()), "{names:?}");
        assert!(names.contains(&"rootfs/bin/sh".to_owned()), "{names:?}");
        assert!(
            names.contains(&"rootfs/app/conf/a.toml".to_owned()),
            "{names:?}"
        );
        assert!(dockerfile.starts_with("FROM scratch\n"), "{dockerfile}");
        assert!(dockerfile.contains("USER 65534:65534\n"), "{dockerfile}");
        assert!(
            dockerfile.contains("ENV LD_LIBRARY_PATH=\"/bin\"\n"),
            "{dockerfile}"
        );
        assert!(
            dockerfile.ends_with("LABEL mlops.project=\"a \\\"b\\\"\" mlops.revision=\"r1\"\n"),
            "{dockerfile}"
        );
    }

    fn names(context: &BuildContext) -> Vec<String> {
        let mut archive = tar::Archive::new(context.tar.as_slice());
        archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect()
    }

    #[test]
    fn dockerfile_context_layout() {
        let dir = tempfile::tempdir().unwrap();
        let context = dir.path().join("app");
        for sub in ["src", ".git", ".mlops"] {
            std::fs::create_dir_all(context.join(sub)).unwrap();
            std::fs::write(context.join(sub).join("file"), b"x").unwrap();
        }
        std::fs::write(context.join("Dockerfile"), b"FROM scratch\n").unwrap();
        std::fs::write(dir.path().join("Outside.Dockerfile"), b"FROM scratch\n").unwrap();

        let inside = dockerfile_context(&context, &context.join("Dockerfile")).unwrap();
        assert_eq!(inside.dockerfile, "Dockerfile");
        assert!(!inside.labelled);
        let listed = names(&inside);
        assert!(listed.contains(&"src/file".to_owned()), "{listed:?}");
        assert!(
            !listed
                .iter()
                .any(|n| n.starts_with(".git") || n.starts_with(".mlops")),
            "{listed:?}"
        );

        let outside = dockerfile_context(&context, &dir.path().join("Outside.Dockerfile")).unwrap();
        assert_eq!(outside.dockerfile, OUTSIDE_DOCKERFILE);
        assert!(names(&outside).contains(&OUTSIDE_DOCKERFILE.to_owned()));
    }

    #[test]
    fn default_library_dirs() {
        for dir in [
            "/lib",
            "/usr/lib64",
            "/lib/x86_64-linux-gnu",
            "/usr/lib/aarch64-linux-gnu",
        ] {
            assert!(is_default_library_dir(Path::new(dir)), "{dir}");
        }
        for dir in [
            "/opt/lib",
            "/usr/local/lib",
            "/lib/x86_64-linux-gnu/extra",
            "/libexec",
        ] {
            assert!(!is_default_library_dir(Path::new(dir)), "{dir}");
        }
    }

    #[test]
    fn failed_build_steps() {
        let output = "Step 1/4 : FROM scratch\n ---> \nStep 2/4 : COPY a /a\n ---> Using cache\n ---> 0123456789ab\n\
                      Step 3/4 : COPY b /b\n ---> abcdef012345\nStep 4/4 : RUN true\n ---> Running in 5f14e72c3b77\n";
        assert_eq!(new_step_images(output), vec!["abcdef012345".to_owned()]);
    }
}
