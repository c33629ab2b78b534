//! `image`: decodes an image, resizes / thumbnails / grays / blurs it and
//! encodes it again, off the async workers.

use std::io::Cursor;
use std::sync::Arc;

use flow_core::value::{self, Map};
use flow_core::{
    BuildContext, ConfigError, Output, Processor, Stage, StageError, StageKind, StageOptions,
    StageType, Value, async_trait,
};
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::imageops::FilterType;
use image::{DynamicImage, ImageFormat, ImageReader};
use schemars::JsonSchema;
use serde::Deserialize;

/// Decodes a PNG or JPEG image, transforms it and encodes it again.
///
/// The image is read from `field` of an object item (an `http` response
/// fetched with `as: bytes` keeps it in `body`), or is the item itself when
/// the item is binary. The operations given run in this order, whatever
/// their order in the file: `resize`, `thumbnail`, `grayscale`, `blur`. The
/// result is encoded to `format` and written back where it was read from;
/// an object also gets `width`, `height` (of the result, in pixels) and
/// `format` (`"png"` or `"jpeg"`). A binary item becomes the new bytes.
///
/// Bytes that are not a PNG or JPEG image (an HTML error page, a truncated
/// download) fail that item with a permanent error, never the run. Decoding,
/// the operations and encoding run on a blocking thread, so `workers`
/// images are processed at once without holding up other stages.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageOptions {
    /// The field of an object item that holds the image bytes (a binary or
    /// string value); the result is written back to it. Ignored when the
    /// item itself is binary.
    #[serde(default = "default_field")]
    pub field: String,
    /// Resize to exactly `{width, height}` pixels. Give only one of them to
    /// keep the aspect ratio. Applied first.
    pub resize: Option<Size>,
    /// Scale down to fit within N×N pixels, keeping the aspect ratio
    /// (`thumbnail: 100` makes a 400×200 image 100×50). An image that
    /// already fits is left as it is: a thumbnail never enlarges.
    pub thumbnail: Option<u32>,
    /// `true`: convert to 8-bit grayscale with one channel (Luma8 PNG,
    /// grayscale JPEG); transparency is dropped.
    #[serde(default)]
    pub grayscale: bool,
    /// Gaussian blur with this sigma (its strength, in pixels of the
    /// resized image), e.g. `2.0`. Applied last.
    pub blur: Option<f32>,
    /// The output format, `png` or `jpeg` (JPEG has no transparency: it is
    /// dropped). Absent: the format the image came in.
    pub format: Option<Format>,
    /// JPEG quality from 1 (smallest) to 100 (best); default 85. Only for
    /// JPEG output.
    pub quality: Option<u8>,
}

/// A target size for `resize`; at least one of the two.
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Size {
    /// Width in pixels; absent: from `height`, keeping the aspect ratio.
    pub width: Option<u32>,
    /// Height in pixels; absent: from `width`, keeping the aspect ratio.
    pub height: Option<u32>,
}

/// An encoded image format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Lossless PNG.
    Png,
    /// Lossy JPEG, with `quality`.
    #[serde(alias = "jpg")]
    Jpeg,
}

fn default_field() -> String {
    "body".into()
}

/// The JPEG quality when none is given.
const DEFAULT_QUALITY: u8 = 85;

/// The largest image an operation may produce, in pixels (512 MiB of RGBA,
/// the decoder's own allocation limit): a one-sided `resize` of a very
/// narrow image must fail the item, not exhaust memory.
const MAX_PIXELS: u64 = 512 * 1024 * 1024 / 4;

impl StageOptions for ImageOptions {
    fn build(self, _ctx: &BuildContext) -> Result<Stage, ConfigError> {
        if self.field.is_empty() {
            return Err(ConfigError::new("field", "must not be empty"));
        }
        if let Some(size) = self.resize {
            match (size.width, size.height) {
                (None, None) => {
                    return Err(ConfigError::new("resize", "give `width`, `height` or both"));
                }
                (Some(0), _) => return Err(ConfigError::new("resize.width", "must be at least 1")),
                (_, Some(0)) => {
                    return Err(ConfigError::new("resize.height", "must be at least 1"));
                }
                _ => {}
            }
        }
        if self.thumbnail == Some(0) {
            return Err(ConfigError::new("thumbnail", "must be at least 1"));
        }
        if let Some(sigma) = self.blur
            && !(sigma.is_finite() && sigma > 0.0)
        {
            return Err(ConfigError::new("blur", "must be a number above 0"));
        }
        match (self.quality, self.format) {
            (Some(q), _) if !(1..=100).contains(&q) => {
                return Err(ConfigError::new("quality", "must be from 1 to 100"));
            }
            (Some(_), Some(Format::Png)) => {
                return Err(ConfigError::new(
                    "quality",
                    "applies to `format: jpeg` only (PNG is lossless)",
                ));
            }
            _ => {}
        }
        let ops = Arc::new(Operations {
            resize: self.resize,
            thumbnail: self.thumbnail,
            grayscale: self.grayscale,
            blur: self.blur,
            format: self.format,
            quality: self.quality.unwrap_or(DEFAULT_QUALITY),
        });
        let field = value::string(self.field);
        Ok(Stage::processor(move |_| {
            Ok(ImageWorker {
                field: field.clone(),
                ops: ops.clone(),
            })
        }))
    }
}

flow_core::inventory::submit! {
    StageType::new::<ImageOptions>(
        "image",
        StageKind::Processor,
        "Resizes, thumbnails, grays or blurs images (PNG, JPEG) held as bytes.",
        "- name: thumbs\n  type: image\n  workers: 2\n  with: { thumbnail: 128, grayscale: true, format: png }\n",
    )
}

/// What to do to each image, shared by the workers.
#[derive(Debug)]
struct Operations {
    resize: Option<Size>,
    thumbnail: Option<u32>,
    grayscale: bool,
    blur: Option<f32>,
    format: Option<Format>,
    quality: u8,
}

/// An encoded result.
struct Encoded {
    bytes: Vec<u8>,
    width: u32,
    height: u32,
    format: Format,
}

struct ImageWorker {
    /// The field name, as a value (an object key).
    field: Value,
    ops: Arc<Operations>,
}

#[async_trait]
impl Processor for ImageWorker {
    async fn process(&mut self, input: &Value, out: &mut Output) -> Result<(), StageError> {
        let source = match input {
            Value::BStr(_) => input.clone(),
            Value::Obj(map) => match map.get(&self.field) {
                Some(v @ (Value::BStr(_) | Value::TStr(_))) => v.clone(),
                Some(other) => {
                    return Err(StageError::permanent(format!(
                        "field `{}` holds {}, not image bytes",
                        value::to_text(&self.field),
                        kind_of(other)
                    )));
                }
                None => {
                    return Err(StageError::permanent(format!(
                        "no field `{}` with image bytes in the item",
                        value::to_text(&self.field)
                    )));
                }
            },
            other => {
                return Err(StageError::permanent(format!(
                    "the item is {}, not image bytes or an object holding them",
                    kind_of(other)
                )));
            }
        };
        let ops = self.ops.clone();
        // Decoding, resizing and encoding are CPU-bound: a blocking thread
        // keeps the async workers free. The value moves in; its bytes are
        // shared, not copied.
        let encoded = match tokio::task::spawn_blocking(move || ops.apply(&source)).await {
            Ok(result) => result?,
            Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            Err(join) => return Err(StageError::retryable(format!("image thread: {join}"))),
        };
        out.emit(self.put_back(input, encoded));
        Ok(())
    }
}

impl ImageWorker {
    /// The input with the new image where the old one was.
    fn put_back(&self, input: &Value, encoded: Encoded) -> Value {
        let bytes = value::bytes(encoded.bytes);
        let Value::Obj(map) = input else {
            return bytes;
        };
        let mut map: Map = (**map).clone();
        map.insert(self.field.clone(), bytes);
        map.insert(value::string("width"), value::int(encoded.width.into()));
        map.insert(value::string("height"), value::int(encoded.height.into()));
        map.insert(
            value::string("format"),
            value::string(encoded.format.name()),
        );
        Value::obj(map)
    }
}

impl Operations {
    /// Decodes `source` (binary or string value), applies the operations in
    /// their documented order and encodes the result.
    fn apply(&self, source: &Value) -> Result<Encoded, StageError> {
        let data: &[u8] = match source {
            Value::BStr(b) | Value::TStr(b) => b,
            _ => unreachable!("the worker passes only byte values"),
        };
        let (mut img, input_format) = decode(data)?;
        if let Some(size) = self.resize {
            let (w, h) = size.target(img.width(), img.height());
            check_size(w, h)?;
            img = img.resize_exact(w, h, FilterType::CatmullRom);
        }
        if let Some(n) = self.thumbnail
            && (img.width() > n || img.height() > n)
        {
            img = img.thumbnail(n, n);
        }
        if self.grayscale {
            img = DynamicImage::ImageLuma8(img.to_luma8());
        }
        if let Some(sigma) = self.blur {
            img = img.blur(sigma);
        }
        let format = self.format.unwrap_or(input_format);
        let bytes = encode(&img, format, self.quality)?;
        Ok(Encoded {
            bytes,
            width: img.width(),
            height: img.height(),
            format,
        })
    }
}

impl Size {
    /// The size to resize a `width`×`height` image to.
    fn target(self, width: u32, height: u32) -> (u32, u32) {
        let scaled = |n: u32, num: u32, den: u32| -> u32 {
            let v = (u64::from(n) * u64::from(num) + u64::from(den) / 2) / u64::from(den);
            v.clamp(1, u64::from(u32::MAX)) as u32
        };
        match (self.width, self.height) {
            (Some(w), Some(h)) => (w, h),
            (Some(w), None) => (w, scaled(height, w, width)),
            (None, Some(h)) => (scaled(width, h, height), h),
            (None, None) => (width, height),
        }
    }
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Png => "png",
            Format::Jpeg => "jpeg",
        }
    }
}

fn decode(data: &[u8]) -> Result<(DynamicImage, Format), StageError> {
    let reader = ImageReader::new(Cursor::new(data))
        .with_guessed_format()
        .expect("reading from memory cannot fail");
    let format = match reader.format() {
        Some(ImageFormat::Png) => Format::Png,
        Some(ImageFormat::Jpeg) => Format::Jpeg,
        Some(other) => {
            return Err(StageError::permanent(format!(
                "unsupported image format {} (flow decodes PNG and JPEG)",
                other.extensions_str().first().unwrap_or(&"?")
            )));
        }
        None => return Err(StageError::permanent(not_an_image(data))),
    };
    let img = reader.decode().map_err(|e| {
        StageError::permanent(format!("cannot decode {} image: {e}", format.name()))
    })?;
    Ok((img, format))
}

/// Says what the bytes look like instead, so a saved HTML error page is
/// recognisable in the error stats.
fn not_an_image(data: &[u8]) -> String {
    if data.is_empty() {
        return "not an image: no bytes".into();
    }
    let head = &data[..data.len().min(16)];
    let shown: String = head
        .iter()
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect();
    let more = if data.len() > head.len() { "…" } else { "" };
    format!(
        "not a PNG or JPEG image ({} bytes starting \"{shown}{more}\")",
        data.len()
    )
}

fn check_size(w: u32, h: u32) -> Result<(), StageError> {
    if u64::from(w) * u64::from(h) > MAX_PIXELS {
        return Err(StageError::permanent(format!(
            "resizing to {w}×{h} would make an image over {MAX_PIXELS} pixels"
        )));
    }
    Ok(())
}

fn encode(img: &DynamicImage, format: Format, quality: u8) -> Result<Vec<u8>, StageError> {
    let mut bytes = Vec::new();
    // `write_with_encoder` converts what the format cannot hold (alpha or
    // 16-bit samples for JPEG) first.
    let written = match format {
        Format::Png => img.write_with_encoder(PngEncoder::new(&mut bytes)),
        Format::Jpeg => img.write_with_encoder(JpegEncoder::new_with_quality(&mut bytes, quality)),
    };
    written.map_err(|e| {
        StageError::permanent(format!(
            "cannot encode {}×{} image as {}: {e}",
            img.width(),
            img.height(),
            format.name()
        ))
    })?;
    Ok(bytes)
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Num(_) => "a number",
        Value::TStr(_) => "a string",
        Value::BStr(_) => "bytes",
        Value::Arr(_) => "an array",
        Value::Obj(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flow_core::Worker;
    use image::{ColorType, GenericImageView, RgbImage, Rgba, RgbaImage};

    /// A `w`×`h` RGB gradient, encoded as PNG.
    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 255 / w.max(1)) as u8, (y * 255 / h.max(1)) as u8, 128])
        });
        let mut bytes = Vec::new();
        DynamicImage::ImageRgb8(img)
            .write_to(Cursor::new(&mut bytes), ImageFormat::Png)
            .unwrap();
        bytes
    }

    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let img = image::load_from_memory(&png(w, h)).unwrap();
        let mut bytes = Vec::new();
        img.write_to(Cursor::new(&mut bytes), ImageFormat::Jpeg)
            .unwrap();
        bytes
    }

    fn options(yaml_like: serde_json::Value) -> ImageOptions {
        serde_json::from_value(yaml_like).unwrap()
    }

    fn ctx() -> BuildContext {
        BuildContext {
            stage: "img".into(),
            workers: 1,
            base_dir: ".".into(),
            timeout: None,
        }
    }

    fn worker(with: serde_json::Value) -> Box<dyn Processor> {
        let Stage::Workers(make) = options(with).build(&ctx()).unwrap() else {
            panic!("image is a processor")
        };
        match make(0).unwrap() {
            Worker::Processor(p) => p,
            Worker::Transform(_) => panic!("image runs off the async workers"),
        }
    }

    async fn run(with: serde_json::Value, input: Value) -> Result<Value, StageError> {
        let mut w = worker(with);
        let mut out = Output::new();
        w.process(&input, &mut out).await?;
        let items = std::mem::take(out.items_mut());
        assert_eq!(items.len(), 1, "one output per image");
        Ok(items.into_iter().next().unwrap().value)
    }

    fn response(body: Vec<u8>) -> Value {
        value::object([
            ("url", value::string("http://x/a.png")),
            ("status", value::int(200)),
            ("body", value::bytes(body)),
        ])
    }

    fn body_of(v: &Value) -> &[u8] {
        match value::get(v, "body") {
            Some(Value::BStr(b)) => b,
            other => panic!("body is not bytes: {other:?}"),
        }
    }

    fn num(v: &Value, key: &str) -> u32 {
        value::as_f64(value::get(v, key).unwrap()).unwrap() as u32
    }

    #[tokio::test]
    async fn thumbnail_fits_within_n_and_keeps_the_aspect_ratio() {
        let out = run(
            serde_json::json!({ "thumbnail": 100 }),
            response(png(400, 200)),
        )
        .await
        .unwrap();
        let img = image::load_from_memory(body_of(&out)).unwrap();
        assert_eq!(img.dimensions(), (100, 50));
        assert_eq!((num(&out, "width"), num(&out, "height")), (100, 50));
        assert_eq!(
            value::as_str(value::get(&out, "format").unwrap()),
            Some("png")
        );
        // The rest of the response is kept.
        assert_eq!(
            value::as_str(value::get(&out, "url").unwrap()),
            Some("http://x/a.png")
        );
        assert_eq!(num(&out, "status"), 200);
    }

    #[tokio::test]
    async fn thumbnail_never_enlarges_a_small_image() {
        let out = run(
            serde_json::json!({ "thumbnail": 100 }),
            response(png(30, 60)),
        )
        .await
        .unwrap();
        let img = image::load_from_memory(body_of(&out)).unwrap();
        assert_eq!(img.dimensions(), (30, 60));
    }

    #[tokio::test]
    async fn resize_is_exact_and_one_side_keeps_the_aspect_ratio() {
        let both = serde_json::json!({ "resize": { "width": 33, "height": 71 } });
        let out = run(both, response(png(400, 200))).await.unwrap();
        assert_eq!(
            image::load_from_memory(body_of(&out)).unwrap().dimensions(),
            (33, 71)
        );

        let width = serde_json::json!({ "resize": { "width": 100 } });
        let out = run(width, response(png(400, 200))).await.unwrap();
        assert_eq!(
            image::load_from_memory(body_of(&out)).unwrap().dimensions(),
            (100, 50)
        );

        let height = serde_json::json!({ "resize": { "height": 20 } });
        let out = run(height, response(png(400, 200))).await.unwrap();
        assert_eq!(
            image::load_from_memory(body_of(&out)).unwrap().dimensions(),
            (40, 20)
        );
    }

    #[tokio::test]
    async fn resize_runs_before_thumbnail() {
        let with =
            serde_json::json!({ "resize": { "width": 50, "height": 400 }, "thumbnail": 100 });
        let out = run(with, response(png(10, 10))).await.unwrap();
        assert_eq!((num(&out, "width"), num(&out, "height")), (13, 100));
    }

    #[tokio::test]
    async fn grayscale_png_has_one_channel_even_from_rgba() {
        let rgba = RgbaImage::from_pixel(8, 4, Rgba([200, 10, 10, 100]));
        let mut bytes = Vec::new();
        DynamicImage::ImageRgba8(rgba)
            .write_to(Cursor::new(&mut bytes), ImageFormat::Png)
            .unwrap();
        let out = run(serde_json::json!({ "grayscale": true }), response(bytes))
            .await
            .unwrap();
        let img = image::load_from_memory(body_of(&out)).unwrap();
        assert_eq!(img.color(), ColorType::L8);
        assert_eq!(img.dimensions(), (8, 4));
    }

    #[tokio::test]
    async fn grayscale_jpeg_has_one_channel() {
        let with = serde_json::json!({ "grayscale": true, "format": "jpeg", "quality": 70 });
        let out = run(with, response(png(40, 30))).await.unwrap();
        let data = body_of(&out);
        assert_eq!(image::guess_format(data).unwrap(), ImageFormat::Jpeg);
        assert_eq!(
            image::load_from_memory(data).unwrap().color(),
            ColorType::L8
        );
        assert_eq!(
            value::as_str(value::get(&out, "format").unwrap()),
            Some("jpeg")
        );
    }

    #[tokio::test]
    async fn jpeg_quality_trades_size_for_fidelity() {
        let low = serde_json::json!({ "format": "jpeg", "quality": 5 });
        let high = serde_json::json!({ "format": "jpeg", "quality": 100 });
        let low = run(low, response(png(200, 200))).await.unwrap();
        let high = run(high, response(png(200, 200))).await.unwrap();
        assert!(body_of(&low).len() < body_of(&high).len());
    }

    #[tokio::test]
    async fn without_a_format_the_image_keeps_its_own() {
        let out = run(
            serde_json::json!({ "thumbnail": 10 }),
            response(jpeg(40, 20)),
        )
        .await
        .unwrap();
        assert_eq!(
            image::guess_format(body_of(&out)).unwrap(),
            ImageFormat::Jpeg
        );
        assert_eq!(
            value::as_str(value::get(&out, "format").unwrap()),
            Some("jpeg")
        );
        assert_eq!((num(&out, "width"), num(&out, "height")), (10, 5));
    }

    #[tokio::test]
    async fn blur_smooths_pixels_and_keeps_the_size() {
        // A black image with one white pixel: the blur spreads it.
        let mut img = RgbImage::new(21, 21);
        img.put_pixel(10, 10, image::Rgb([255, 255, 255]));
        let mut bytes = Vec::new();
        DynamicImage::ImageRgb8(img)
            .write_to(Cursor::new(&mut bytes), ImageFormat::Png)
            .unwrap();
        let out = run(serde_json::json!({ "blur": 2.0 }), response(bytes))
            .await
            .unwrap();
        let img = image::load_from_memory(body_of(&out)).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (21, 21));
        assert!(img.get_pixel(10, 10)[0] < 255, "the peak is spread");
        assert!(img.get_pixel(11, 10)[0] > 0, "its neighbours get some");
    }

    #[tokio::test]
    async fn a_binary_item_is_replaced_by_the_new_bytes() {
        let out = run(
            serde_json::json!({ "thumbnail": 16 }),
            value::bytes(png(64, 32)),
        )
        .await
        .unwrap();
        let Value::BStr(data) = &out else {
            panic!("a binary item stays binary: {out:?}")
        };
        assert_eq!(image::load_from_memory(data).unwrap().dimensions(), (16, 8));
    }

    #[tokio::test]
    async fn another_field_can_hold_the_image() {
        let input = value::object([("id", value::int(1)), ("pic", value::bytes(png(10, 10)))]);
        let out = run(serde_json::json!({ "field": "pic", "thumbnail": 5 }), input)
            .await
            .unwrap();
        assert_eq!(num(&out, "width"), 5);
        assert!(matches!(value::get(&out, "pic"), Some(Value::BStr(_))));
        assert!(value::get(&out, "body").is_none());
    }

    #[tokio::test]
    async fn non_images_fail_the_item_permanently_saying_what_they_are() {
        let html = b"<!DOCTYPE html><html><body>Not found</body></html>".to_vec();
        let err = run(serde_json::json!({}), response(html))
            .await
            .unwrap_err();
        assert!(!err.is_retryable());
        assert!(
            err.message().starts_with("not a PNG or JPEG image"),
            "{err}"
        );
        assert!(err.message().contains("<!DOCTYPE html>"), "{err}");

        let mut truncated = png(50, 50);
        truncated.truncate(60);
        let err = run(serde_json::json!({}), response(truncated))
            .await
            .unwrap_err();
        assert!(!err.is_retryable());
        assert!(
            err.message().starts_with("cannot decode png image"),
            "{err}"
        );

        let err = run(serde_json::json!({}), response(Vec::new()))
            .await
            .unwrap_err();
        assert_eq!(err.message(), "not an image: no bytes");
    }

    #[tokio::test]
    async fn items_without_image_bytes_fail_permanently() {
        let no_body = value::object([("url", value::string("u"))]);
        let err = run(serde_json::json!({}), no_body).await.unwrap_err();
        assert!(!err.is_retryable());
        assert!(err.message().contains("no field `body`"), "{err}");

        let number_body = value::object([("body", value::int(3))]);
        let err = run(serde_json::json!({}), number_body).await.unwrap_err();
        assert!(err.message().contains("holds a number"), "{err}");

        let err = run(serde_json::json!({}), value::int(3)).await.unwrap_err();
        assert!(err.message().contains("the item is a number"), "{err}");
    }

    #[tokio::test]
    async fn a_resize_that_would_exhaust_memory_fails_the_item() {
        let with = serde_json::json!({ "resize": { "width": 100000 } });
        let err = run(with, response(png(1, 1000))).await.unwrap_err();
        assert!(!err.is_retryable());
        assert!(err.message().contains("would make an image over"), "{err}");
    }

    #[test]
    fn options_are_checked_when_the_stage_is_built() {
        let bad = [
            (serde_json::json!({ "thumbnail": 0 }), "thumbnail"),
            (serde_json::json!({ "resize": {} }), "resize"),
            (
                serde_json::json!({ "resize": { "width": 0 } }),
                "resize.width",
            ),
            (serde_json::json!({ "blur": 0.0 }), "blur"),
            (serde_json::json!({ "blur": -1.0 }), "blur"),
            (serde_json::json!({ "quality": 0 }), "quality"),
            (serde_json::json!({ "quality": 101 }), "quality"),
            (
                serde_json::json!({ "format": "png", "quality": 80 }),
                "quality",
            ),
            (serde_json::json!({ "field": "" }), "field"),
        ];
        for (with, key) in bad {
            let err = match options(with.clone()).build(&ctx()) {
                Ok(_) => panic!("{with} was accepted"),
                Err(e) => e,
            };
            assert_eq!(err.key, key, "{with}: {err}");
        }
        assert!(
            serde_json::from_value::<ImageOptions>(serde_json::json!({ "format": "gif" })).is_err()
        );
        let jpg = options(serde_json::json!({ "format": "jpg", "quality": 50 }));
        assert_eq!(jpg.format, Some(Format::Jpeg));
        assert!(jpg.build(&ctx()).is_ok());
    }
}
