//! The panel's backlight (`/sys/class/backlight/*`): off in quiet hours, and
//! back to the brightness it had when they end. A screen without a backlight
//! device (an LED wall driven over HDMI, a VM) only shows the black frame.
//! This module only writes the files; `schedule` decides when.

use std::path::{Path, PathBuf};

/// The devices under one folder and the brightness each had before it was
/// switched off.
pub struct Backlight {
    root: PathBuf,
    saved: Vec<(PathBuf, String)>,
}

impl Backlight {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
            saved: Vec::new(),
        }
    }

    /// Switches every device off (`on == false`) or back to its brightness.
    /// Returns how many devices were changed; a folder that does not exist
    /// has none.
    pub fn set(&mut self, on: bool) -> std::io::Result<usize> {
        if on {
            let saved = std::mem::take(&mut self.saved);
            for (device, brightness) in &saved {
                std::fs::write(device.join("brightness"), brightness)?;
            }
            return Ok(saved.len());
        }
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Ok(0);
        };
        let mut changed = 0;
        for entry in entries.flatten() {
            let device = entry.path();
            let Ok(brightness) = std::fs::read_to_string(device.join("brightness")) else {
                continue;
            };
            let brightness = brightness.trim().to_owned();
            if brightness == "0" || self.saved.iter().any(|(d, _)| *d == device) {
                continue;
            }
            std::fs::write(device.join("brightness"), "0")?;
            self.saved.push((device, brightness));
            changed += 1;
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_and_back_to_the_brightness_it_had() {
        let dir = tempfile::tempdir().unwrap();
        let panel = dir.path().join("panel0");
        std::fs::create_dir(&panel).unwrap();
        std::fs::write(panel.join("brightness"), "187\n").unwrap();
        let mut b = Backlight::new(dir.path());
        assert_eq!(b.set(false).unwrap(), 1);
        assert_eq!(
            std::fs::read_to_string(panel.join("brightness")).unwrap(),
            "0"
        );
        assert_eq!(b.set(false).unwrap(), 0, "already off");
        assert_eq!(b.set(true).unwrap(), 1);
        assert_eq!(
            std::fs::read_to_string(panel.join("brightness")).unwrap(),
            "187"
        );
        assert_eq!(
            Backlight::new(&dir.path().join("none")).set(false).unwrap(),
            0
        );
    }
}
