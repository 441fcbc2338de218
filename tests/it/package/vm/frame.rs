//! The VM's screen as QEMU dumps it (PPM), and what the test reads in it:
//! colours, QR codes.

use std::path::Path;

/// An RGB frame from a screendump.
pub(super) struct Frame {
    pub(super) width: u32,
    pub(super) height: u32,
    rgb: Vec<u8>,
}

impl Frame {
    /// A binary PPM (P6, 8 bits a channel), which QEMU's screendump writes.
    pub(super) fn from_ppm(bytes: &[u8]) -> Result<Frame, String> {
        let mut fields = Vec::new();
        let mut i = 0;
        while fields.len() < 4 {
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            if bytes.get(i) == Some(&b'#') {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            let start = i;
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            if start == i {
                return Err("a truncated PPM header".into());
            }
            fields.push(String::from_utf8_lossy(&bytes[start..i]).into_owned());
        }
        // One whitespace byte ends the header.
        i += 1;
        let number = |s: &str| s.parse::<u32>().map_err(|e| format!("{s:?}: {e}"));
        if fields[0] != "P6" || fields[3] != "255" {
            return Err(format!("not an 8-bit P6 PPM: {fields:?}"));
        }
        let (width, height) = (number(&fields[1])?, number(&fields[2])?);
        let size = (width * height * 3) as usize;
        let rgb = bytes
            .get(i..i + size)
            .ok_or_else(|| format!("{} bytes of pixels, {size} expected", bytes.len() - i))?
            .to_vec();
        Ok(Frame { width, height, rgb })
    }

    fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = ((y * self.width + x) * 3) as usize;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    /// Whether the pixel is `colour`, give or take a rounding.
    pub(super) fn near(&self, x: u32, y: u32, colour: [u8; 3]) -> bool {
        x < self.width
            && y < self.height
            && self
                .pixel(x, y)
                .iter()
                .zip(colour)
                .all(|(&a, b)| a.abs_diff(b) <= 4)
    }

    /// Pixels of `colour`, sampled every 4 pixels.
    pub(super) fn count(&self, colour: [u8; 3]) -> usize {
        (0..self.height)
            .step_by(4)
            .flat_map(|y| (0..self.width).step_by(4).map(move |x| (x, y)))
            .filter(|&(x, y)| self.pixel(x, y) == colour)
            .count()
    }

    pub(super) fn distinct_colours(&self) -> usize {
        let mut seen = std::collections::HashSet::new();
        for p in self.rgb.chunks(3) {
            seen.insert([p[0], p[1], p[2]]);
            if seen.len() > 1000 {
                break;
            }
        }
        seen.len()
    }

    /// What every QR code in the frame decodes to.
    pub(super) fn qr_codes(&self) -> Vec<String> {
        let (w, h) = (self.width as usize, self.height as usize);
        let luma: Vec<u8> = self
            .rgb
            .chunks(3)
            .map(|p| ((p[0] as u32 * 299 + p[1] as u32 * 587 + p[2] as u32 * 114) / 1000) as u8)
            .collect();
        let mut prepared =
            rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| luma[y * w + x]);
        prepared
            .detect_grids()
            .iter()
            .filter_map(|g| g.decode().ok().map(|(_, content)| content))
            .collect()
    }

    /// Kept as a PNG under `GONGKAI_RENDER_DIR`, if set.
    pub(super) fn save(&self, name: &str) {
        if let Ok(dir) = std::env::var("GONGKAI_RENDER_DIR") {
            let rgba: Vec<u8> = self
                .rgb
                .chunks(3)
                .flat_map(|p| [p[0], p[1], p[2], 255])
                .collect();
            let png = gongkai::ui::png(&rgba, self.width, self.height).unwrap();
            std::fs::write(Path::new(&dir).join(name), png).unwrap();
        }
    }
}

#[test]
fn a_ppm_frame_reads_back_its_pixels() {
    let mut ppm = b"P6\n# QEMU\n2 1\n255\n".to_vec();
    ppm.extend_from_slice(&[1, 2, 3, 0x1f, 0x4e, 0x79]);
    let frame = Frame::from_ppm(&ppm).unwrap();
    assert_eq!((frame.width, frame.height), (2, 1));
    assert_eq!(frame.pixel(0, 0), [1, 2, 3]);
    assert!(frame.near(1, 0, super::BAND));
    assert!(Frame::from_ppm(&ppm[..ppm.len() - 1]).is_err(), "truncated");
    assert!(Frame::from_ppm(b"P3\n2 1\n255\n").is_err(), "not binary");
}
