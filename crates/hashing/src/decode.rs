//! Image files to hashable pixels (feature `decode`, pure Rust via the `image` crate).
//!
//! Channel handling follows the reference policy used for the conformance data (Pillow's
//! conversions feeding Meta's C++): grey images stay grey (alpha dropped, 16-bit grey
//! clipped at 255 the way Pillow converts mode `I;16` to `L`), everything else becomes
//! RGB with alpha dropped, not composited. EXIF orientation is not applied, as in the
//! reference. JPEG decoding is `image`'s pure-Rust decoder (zune-jpeg); its output can
//! differ from libjpeg-turbo by a level here and there, which moves a few hash bits.

use std::path::Path;

use crate::hasher::{ImageView, PixelFormat};

/// A decoded image in a format the hasher takes.
#[derive(Clone, Debug)]
pub struct DecodedImage {
    /// Packed pixels, row-major.
    pub pixels: Vec<u8>,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `Rgb8` or `Grey8`.
    pub format: PixelFormat,
}

impl DecodedImage {
    /// A view for [`crate::PdqHasher`].
    pub fn view(&self) -> ImageView<'_> {
        ImageView::packed(&self.pixels, self.width, self.height, self.format)
            .expect("decoded buffers are sized by construction")
    }

    /// The pixels as packed RGB8 (grey replicated, alpha dropped).
    pub fn to_rgb(&self) -> Vec<u8> {
        match self.format {
            PixelFormat::Rgb8 => self.pixels.clone(),
            PixelFormat::Rgba8 => self
                .pixels
                .chunks(4)
                .flat_map(|p| [p[0], p[1], p[2]])
                .collect(),
            PixelFormat::Grey8 => self.pixels.iter().flat_map(|&g| [g, g, g]).collect(),
            PixelFormat::StudioY8 => self
                .pixels
                .iter()
                .flat_map(|&y| [crate::hasher::studio_luma(y).round() as u8; 3])
                .collect(),
        }
    }
}

/// Why an image file could not be decoded.
#[derive(Debug)]
pub struct DecodeError {
    /// The file.
    pub path: String,
    /// What went wrong.
    pub source: image::ImageError,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.source)
    }
}

impl std::error::Error for DecodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Decodes an image from memory (format guessed from the content).
pub fn decode_bytes(bytes: &[u8]) -> Result<DecodedImage, image::ImageError> {
    let img = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(image::ImageError::IoError)?
        .decode()?;
    Ok(from_dynamic(img))
}

/// Decodes an image file.
pub fn decode_file(path: &Path) -> Result<DecodedImage, DecodeError> {
    let err = |source| DecodeError {
        path: path.display().to_string(),
        source,
    };
    let bytes = std::fs::read(path).map_err(|e| err(image::ImageError::IoError(e)))?;
    decode_bytes(&bytes).map_err(err)
}

fn from_dynamic(img: image::DynamicImage) -> DecodedImage {
    use image::DynamicImage as D;
    let (width, height) = (img.width() as usize, img.height() as usize);
    let grey = |pixels| DecodedImage {
        pixels,
        width,
        height,
        format: PixelFormat::Grey8,
    };
    let rgb = |pixels| DecodedImage {
        pixels,
        width,
        height,
        format: PixelFormat::Rgb8,
    };
    match img {
        D::ImageLuma8(b) => grey(b.into_raw()),
        D::ImageLumaA8(b) => grey(b.into_raw().chunks_exact(2).map(|p| p[0]).collect()),
        D::ImageLuma16(b) => grey(b.into_raw().into_iter().map(|v| v.min(255) as u8).collect()),
        D::ImageLumaA16(b) => grey(
            b.into_raw()
                .chunks_exact(2)
                .map(|p| p[0].min(255) as u8)
                .collect(),
        ),
        D::ImageRgb8(b) => rgb(b.into_raw()),
        D::ImageRgba8(b) => rgb(b
            .into_raw()
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect()),
        other => rgb(other.to_rgb8().into_raw()),
    }
}
