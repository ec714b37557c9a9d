//! Sending photos and documents: the checks, the upload in parts, the `InputMedia`.

use channel_core::{Attachment, BlobError, BlobStore, ChannelError};
use grammers_client::Client;
use grammers_mtsender::InvocationError;
use grammers_tl_types as tl;

/// Telegram's caption limit.
pub(crate) const CAPTION_MAX: usize = 1024;
/// Upload part size (Telegram accepts up to 512 KiB, a divisor of 512 KiB).
pub(crate) const PART: usize = 512 * 1024;
/// Files above this go with `upload.saveBigFilePart`.
const BIG: usize = 10 * 1024 * 1024;
/// Photos Telegram accepts as photos (larger or other images go as documents).
const PHOTO_MAX: usize = 10 * 1024 * 1024;

/// Refuses attachments Telegram would refuse, before anything is read or uploaded.
pub(crate) fn check(a: &Attachment, max: u64) -> Result<(), ChannelError> {
    if a.size == 0 {
        return Err(ChannelError::InvalidInput("an empty attachment".to_owned()));
    }
    if a.size > max {
        return Err(ChannelError::InvalidInput(format!(
            "attachment of {} bytes is larger than the {max} bytes Telegram accepts",
            a.size
        )));
    }
    Ok(())
}

/// The bytes of an attachment: a missing or corrupt blob is permanent, a failing store
/// transient.
pub(crate) async fn read(blobs: &BlobStore, a: &Attachment) -> Result<Vec<u8>, ChannelError> {
    match blobs.get(&a.blob_key).await {
        Ok(b) => Ok(b.to_vec()),
        Err(
            e @ (BlobError::NotFound(_) | BlobError::InvalidKey(_) | BlobError::TooLarge { .. }),
        ) => Err(ChannelError::permanent(format!("attachment {}: {e}", a.blob_key))),
        Err(e) => Err(ChannelError::transient(format!("attachment {}: {e}", a.blob_key))),
    }
}

fn is_photo(a: &Attachment, len: usize) -> bool {
    matches!(a.mime_type.as_str(), "image/jpeg" | "image/png" | "image/webp") && len <= PHOTO_MAX
}

/// Uploads the bytes in parts under `file_id` (derived from the message's `random_id`, so a
/// retry uploads under the same id) and returns the media to send.
pub(crate) async fn upload(
    client: &Client,
    file_id: i64,
    a: &Attachment,
    data: &[u8],
) -> Result<tl::enums::InputMedia, InvocationError> {
    let parts = data.len().div_ceil(PART);
    let total = i32::try_from(parts).unwrap_or(i32::MAX);
    let big = data.len() > BIG;
    for (i, chunk) in data.chunks(PART).enumerate() {
        let part = i32::try_from(i).unwrap_or(i32::MAX);
        if big {
            client
                .invoke(&tl::functions::upload::SaveBigFilePart {
                    file_id,
                    file_part: part,
                    file_total_parts: total,
                    bytes: chunk.to_vec(),
                })
                .await?;
        } else {
            client
                .invoke(&tl::functions::upload::SaveFilePart {
                    file_id,
                    file_part: part,
                    bytes: chunk.to_vec(),
                })
                .await?;
        }
    }
    let name = a.name.clone().unwrap_or_else(|| "file".to_owned());
    let file: tl::enums::InputFile = if big {
        tl::types::InputFileBig { id: file_id, parts: total, name: name.clone() }.into()
    } else {
        tl::types::InputFile {
            id: file_id,
            parts: total,
            name: name.clone(),
            md5_checksum: String::new(),
        }
        .into()
    };
    Ok(if is_photo(a, data.len()) {
        tl::types::InputMediaUploadedPhoto {
            spoiler: false,
            live_photo: false,
            file,
            stickers: None,
            ttl_seconds: None,
            video: None,
        }
        .into()
    } else {
        tl::types::InputMediaUploadedDocument {
            nosound_video: false,
            force_file: true,
            spoiler: false,
            file,
            thumb: None,
            mime_type: a.mime_type.clone(),
            attributes: vec![tl::types::DocumentAttributeFilename { file_name: name }.into()],
            stickers: None,
            video_cover: None,
            video_timestamp: None,
            ttl_seconds: None,
        }
        .into()
    })
}

/// A received photo or document: what the message says about it, and how to fetch it.
pub(crate) struct Incoming {
    pub(crate) name: Option<String>,
    pub(crate) mime_type: String,
    pub(crate) size: u64,
    file: File,
}

enum File {
    Photo(grammers_client::media::Photo),
    Document(grammers_client::media::Document),
}

impl Incoming {
    /// The downloadable file of a message's media, if it has one.
    pub(crate) fn from_raw(media: &tl::enums::MessageMedia) -> Option<Self> {
        match media {
            tl::enums::MessageMedia::Photo(p) if p.photo.is_some() => {
                let photo = grammers_client::media::Photo::from_raw_media(p.clone());
                Some(Self {
                    name: None,
                    mime_type: "image/jpeg".to_owned(),
                    size: photo.size().unwrap_or(0) as u64,
                    file: File::Photo(photo),
                })
            }
            tl::enums::MessageMedia::Document(d) if d.document.is_some() => {
                let doc = grammers_client::media::Document::from_raw_media(d.clone());
                Some(Self {
                    name: doc.name().filter(|n| !n.is_empty()).map(str::to_owned),
                    mime_type: doc
                        .mime_type()
                        .filter(|m| !m.is_empty())
                        .unwrap_or("application/octet-stream")
                        .to_owned(),
                    size: doc.size().unwrap_or(0) as u64,
                    file: File::Document(doc),
                })
            }
            _ => None,
        }
    }

    /// The bytes, in parts of 512 KiB, from the file's DC.
    pub(crate) async fn download(
        &self,
        client: &Client,
        alive: impl Fn(),
    ) -> Result<Vec<u8>, InvocationError> {
        let mut parts = match &self.file {
            File::Photo(p) => client.iter_download(p),
            File::Document(d) => client.iter_download(d),
        }
        .chunk_size(i32::try_from(PART).unwrap_or(512 * 1024));
        let mut data = Vec::with_capacity(usize::try_from(self.size).unwrap_or(0));
        while let Some(chunk) = parts.next().await? {
            alive();
            data.extend_from_slice(&chunk);
        }
        Ok(data)
    }
}
