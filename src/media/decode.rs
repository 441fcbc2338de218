//! Decoding a cached file into pixels, under limits that refuse a
//! decompression bomb before anything is allocated.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};

use super::MediaError;

/// The largest width or height, in pixels, that [`decode`] accepts.
pub const MAX_IMAGE_SIDE: u32 = 8192;

/// The most memory, in bytes, that [`decode`] lets a decoder allocate for one
/// image: exactly an 8192×8192 RGBA8 picture.
pub const MAX_DECODE_ALLOC: u64 = 256 * 1024 * 1024;

/// A decoded picture: `width`×`height` pixels, four bytes (RGBA) each, rows
/// top to bottom.
#[derive(Clone, PartialEq, Eq)]
pub struct DecodedImage {
    pub width: u32,
    pub height: u32,
    pub rgba: Vec<u8>,
}

impl std::fmt::Debug for DecodedImage {
    // Printing megabytes of pixels helps nobody.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodedImage")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("rgba_len", &self.rgba.len())
            .finish()
    }
}

impl DecodedImage {
    /// The RGBA value of the pixel at (`x`, `y`), if it is inside the image.
    pub fn pixel(&self, x: u32, y: u32) -> Option<[u8; 4]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let at = (y as usize * self.width as usize + x as usize) * 4;
        self.rgba.get(at..at + 4)?.try_into().ok()
    }
}

/// The image format for a declared MIME type. The format is never guessed
/// from the content: a file must be what the signed notice says it is.
pub fn format_of(mime: &str) -> Result<ImageFormat, MediaError> {
    match mime {
        "image/jpeg" => Ok(ImageFormat::Jpeg),
        "image/png" => Ok(ImageFormat::Png),
        "image/webp" => Ok(ImageFormat::WebP),
        _ => Err(MediaError::UnsupportedMime {
            mime: mime.to_string(),
        }),
    }
}

/// The size that fits `width`×`height` into `max_width`×`max_height` keeping
/// the aspect ratio, never larger than the original, never zero.
pub fn fit_within(width: u32, height: u32, max_width: u32, max_height: u32) -> (u32, u32) {
    let (max_width, max_height) = (max_width.max(1), max_height.max(1));
    if width <= max_width && height <= max_height {
        return (width.max(1), height.max(1));
    }
    // Compare the two scale factors max_width/width and max_height/height
    // without floating point: the smaller one decides.
    let (w, h) = (u64::from(width), u64::from(height));
    let (mw, mh) = (u64::from(max_width), u64::from(max_height));
    let (new_width, new_height) = if mw * h <= mh * w {
        (mw, (h * mw + w / 2) / w)
    } else {
        ((w * mh + h / 2) / h, mh)
    };
    let clamp = |v: u64, max: u32| (v.clamp(1, u64::from(max))) as u32;
    (clamp(new_width, max_width), clamp(new_height, max_height))
}

/// The decoder limits: the strict side limits reject a decompression bomb
/// from its header alone; the allocation limit bounds what is left.
fn decode_limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    limits
}

/// Decodes `bytes` as the declared `mime` type and scales the picture down
/// (never up) to fit `max_width`×`max_height`, as RGBA8.
///
/// The header is read first and an image wider or taller than
/// [`MAX_IMAGE_SIDE`] is rejected before any pixel memory is allocated.
pub fn decode(
    bytes: &[u8],
    mime: &str,
    max_width: u32,
    max_height: u32,
) -> Result<DecodedImage, MediaError> {
    let format = format_of(mime)?;
    let decode_error = |source| MediaError::Decode {
        mime: mime.to_string(),
        source,
    };

    // The first pass has no side limit so that the error can name the size
    // the header claims; it only reads the header.
    let mut header_limits = decode_limits();
    header_limits.max_image_width = None;
    header_limits.max_image_height = None;
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(header_limits);
    let mut decoder = reader.into_decoder().map_err(decode_error)?;
    let (width, height) = decoder.dimensions();
    if width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE {
        return Err(MediaError::ImageTooLarge { width, height });
    }
    let needed = decoder.total_bytes();
    let mut limits = decode_limits();
    if limits.reserve(needed).is_err() {
        return Err(MediaError::ImageNeedsTooMuchMemory {
            width,
            height,
            needed,
        });
    }
    decoder.set_limits(limits).map_err(decode_error)?;
    let image = DynamicImage::from_decoder(decoder).map_err(decode_error)?;

    let (new_width, new_height) = fit_within(width, height, max_width, max_height);
    let image = if (new_width, new_height) == (width, height) {
        image
    } else {
        // Resizing before converting keeps the large intermediate in the
        // decoder's own (often smaller) pixel format.
        image.resize_exact(new_width, new_height, image::imageops::FilterType::Triangle)
    };
    let rgba = image.into_rgba8();
    Ok(DecodedImage {
        width: rgba.width(),
        height: rgba.height(),
        rgba: rgba.into_raw(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_within_keeps_aspect_and_never_upscales() {
        assert_eq!(fit_within(4000, 1000, 1000, 1000), (1000, 250));
        assert_eq!(fit_within(1000, 4000, 1000, 1000), (250, 1000));
        assert_eq!(fit_within(64, 32, 1920, 1080), (64, 32));
        assert_eq!(fit_within(3840, 2160, 1920, 1080), (1920, 1080));
        assert_eq!(fit_within(3000, 3000, 1920, 1080), (1080, 1080));
        assert_eq!(fit_within(8192, 1, 100, 100), (100, 1));
        assert_eq!(fit_within(10, 10, 0, 0), (1, 1));
    }

    #[test]
    fn format_comes_from_the_declared_mime_only() {
        assert_eq!(format_of("image/png").unwrap(), ImageFormat::Png);
        assert_eq!(format_of("image/jpeg").unwrap(), ImageFormat::Jpeg);
        assert_eq!(format_of("image/webp").unwrap(), ImageFormat::WebP);
        for mime in ["image/gif", "image/PNG", "text/html", ""] {
            assert!(
                matches!(format_of(mime), Err(MediaError::UnsupportedMime { .. })),
                "{mime}"
            );
        }
    }
}
