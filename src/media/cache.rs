//! The content-addressed cache of media files.

use std::fs;
use std::io::{self, Read};

use std::path::{Path, PathBuf};

use super::MediaError;
use super::decode::{DecodedImage, decode};
use super::fetch::{check_declaration, check_url, download};
use crate::protocol::notice::Media;

/// The content-addressed cache of media files: the file of an item is
/// `dir/<sha256>`, and only a checked file ever appears under that name.
#[derive(Debug, Clone)]
pub struct MediaCache {
    dir: PathBuf,
}

impl MediaCache {
    /// Opens (creating if needed) the cache directory and removes temporary
    /// files a crash left behind.
    ///
    /// Call it once at start-up, before any fetch: a temporary file being
    /// written by a fetch that is already running would be removed too.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, MediaError> {
        let dir = dir.into();
        let io_error = |source| MediaError::Io {
            path: dir.clone(),
            source,
        };
        fs::create_dir_all(&dir).map_err(io_error)?;
        for entry in fs::read_dir(&dir).map_err(io_error)? {
            let entry = entry.map_err(io_error)?;
            if is_temporary_name(&entry.file_name().to_string_lossy()) {
                let path = entry.path();
                fs::remove_file(&path).map_err(|source| MediaError::Io { path, source })?;
            }
        }
        Ok(MediaCache { dir })
    }

    /// The cache as its readers see it (the UI, previews): nothing is created
    /// or cleaned, so a fetch the daemon is running is left alone.
    pub fn reader(dir: impl Into<PathBuf>) -> Self {
        MediaCache { dir: dir.into() }
    }

    /// The directory this cache lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the file with this hash lives (or would live). The caller passes
    /// a checked lower-case hex hash; [`MediaCache::fetch`],
    /// [`MediaCache::contains`] and [`MediaCache::load`] check it themselves.
    pub fn path_of(&self, sha256: &str) -> PathBuf {
        self.dir.join(sha256)
    }

    /// Whether the item is cached with exactly its signed size. A file of the
    /// wrong size is removed, so that the next fetch replaces it.
    pub fn contains(&self, media: &Media) -> bool {
        if check_declaration(media).is_err() {
            return false;
        }
        let path = self.path_of(&media.sha256);
        match fs::metadata(&path) {
            Ok(meta) if meta.is_file() && meta.len() == media.bytes => true,
            Ok(meta) if meta.is_file() => {
                tracing::warn!(
                    media = %media.id,
                    path = %path.display(),
                    expected = media.bytes,
                    got = meta.len(),
                    "cached media file has the wrong size; removing it"
                );
                let _ = fs::remove_file(&path);
                false
            }
            _ => false,
        }
    }

    /// Makes sure the item is in the cache and returns the path of its file.
    ///
    /// Returns at once if it is cached already. Otherwise downloads it, never
    /// holding more than the signed size in memory, checks size and hash, and
    /// only then writes it under its final name (atomically, so that two
    /// fetches of the same item cannot corrupt each other).
    pub async fn fetch(
        &self,
        client: &reqwest::Client,
        media: &Media,
    ) -> Result<PathBuf, MediaError> {
        check_declaration(media)?;
        let path = self.path_of(&media.sha256);
        if self.contains(media) {
            return Ok(path);
        }
        let url = check_url(media)?;
        let body = download(client, url, media).await?;
        let target = path.clone();
        tokio::task::spawn_blocking(move || store(&target, &body))
            .await
            .map_err(|join| MediaError::Io {
                path: path.clone(),
                source: io::Error::other(join.to_string()),
            })?
            .map_err(|source| MediaError::Io {
                path: path.clone(),
                source,
            })?;
        Ok(path)
    }

    /// Reads a cached item and decodes it to fit `max_width`×`max_height`.
    ///
    /// The hash was checked when the file was fetched; the size is checked
    /// again here because it is cheap and catches a truncated file. Decoding
    /// is CPU work: call this from a blocking thread.
    pub fn load(
        &self,
        media: &Media,
        max_width: u32,
        max_height: u32,
    ) -> Result<DecodedImage, MediaError> {
        check_declaration(media)?;
        let bytes = self.read_cached(media)?;
        decode(&bytes, &media.mime, max_width, max_height)
    }

    fn read_cached(&self, media: &Media) -> Result<Vec<u8>, MediaError> {
        let path = self.path_of(&media.sha256);
        let io_error = |source| MediaError::Io {
            path: path.clone(),
            source,
        };
        let file = match fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(MediaError::NotCached {
                    id: media.id.clone(),
                    sha256: media.sha256.clone(),
                });
            }
            Err(e) => return Err(io_error(e)),
        };
        // Checking the length before reading bounds the memory used, and
        // reading one byte more than expected catches a file that grew since.
        let mut bytes = Vec::new();
        let len = file.metadata().map_err(io_error)?.len();
        if len == media.bytes {
            file.take(media.bytes + 1)
                .read_to_end(&mut bytes)
                .map_err(io_error)?;
        }
        let got = if len == media.bytes {
            bytes.len() as u64
        } else {
            len
        };
        if got != media.bytes {
            let _ = fs::remove_file(&path);
            return Err(MediaError::CachedSizeMismatch {
                id: media.id.clone(),
                expected: media.bytes,
                got,
            });
        }
        Ok(bytes)
    }
}

/// `NamedTempFile` names its files `.tmp<random>`; nothing else in the cache
/// directory contains `.tmp`, since final names are hex digits only.
fn is_temporary_name(name: &str) -> bool {
    name.contains(".tmp")
}

/// Writes a checked body under its final name so that a crash at any moment
/// leaves either no file or the whole file there (replacing an identical file
/// if another fetch won the race).
fn store(path: &Path, body: &[u8]) -> io::Result<()> {
    crate::files::write_atomically(path, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::media::test_media as media;

    #[test]
    fn open_removes_leftover_temporary_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let kept = "b".repeat(64);
        fs::write(dir.path().join(&kept), b"x").unwrap();
        fs::write(dir.path().join(".tmpAbC123"), b"partial").unwrap();
        fs::write(dir.path().join("x.tmp"), b"partial").unwrap();
        let cache = MediaCache::open(dir.path()).unwrap();
        let mut names: Vec<String> = fs::read_dir(cache.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [kept]);
    }

    #[test]
    fn contains_checks_the_size_and_removes_a_wrong_file() {
        let dir = tempfile::tempdir().unwrap();
        let cache = MediaCache::open(dir.path().join("media")).unwrap();
        let sha = "c".repeat(64);
        let m = media(&sha, 3);
        assert!(!cache.contains(&m));
        fs::write(cache.path_of(&sha), b"abc").unwrap();
        assert!(cache.contains(&m));
        fs::write(cache.path_of(&sha), b"abcd").unwrap();
        assert!(!cache.contains(&m));
        assert!(
            !cache.path_of(&sha).exists(),
            "the wrong-size file is removed"
        );
    }

    #[test]
    fn load_reports_missing_and_truncated_files() {
        let dir = tempfile::tempdir().unwrap();
        let cache = MediaCache::open(dir.path()).unwrap();
        let sha = "d".repeat(64);
        let m = media(&sha, 100);
        assert!(matches!(
            cache.load(&m, 10, 10),
            Err(MediaError::NotCached { .. })
        ));
        fs::write(cache.path_of(&sha), [0u8; 40]).unwrap();
        let err = cache.load(&m, 10, 10).unwrap_err();
        assert!(
            matches!(
                err,
                MediaError::CachedSizeMismatch {
                    expected: 100,
                    got: 40,
                    ..
                }
            ),
            "{err}"
        );
        assert!(!cache.path_of(&sha).exists());
    }
}
