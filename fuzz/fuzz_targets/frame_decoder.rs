//! Fuzz target: the input is a TCP byte stream of Bulk / Active Leasequery frames (2-octet
//! `message-size`, then the message), preceded by one control octet.
//!
//! The control octet picks how the stream is cut into reads (chunks of 1 to 64 octets) and the
//! decoder's length limit. Whatever the cut, the decoder must find the same frames and the same
//! error as when it gets the whole stream at once, and the zero-copy `BytesMut` path must agree
//! too. Every frame's message then goes through `lqd_fuzz::check_message`, and one that parses
//! must re-frame to the same octets.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use lqd::codec::{
    Decoded, ErrorKind, FRAME_HEADER_LEN, FrameDecoder, MessageRepr, encode_frame, frame_header,
};

/// What a connection read from the stream: complete frames (prefix included), the error that
/// would close it, and the bytes still waiting for more input.
#[derive(Debug, PartialEq)]
struct Stream {
    frames: Vec<Vec<u8>>,
    error: Option<ErrorKind>,
    leftover: Vec<u8>,
}

/// Feeds `input` to a decoder `chunk` octets at a time, as reads from a socket would arrive.
fn decode_in_chunks(input: &[u8], chunk: usize, max_len: usize) -> Stream {
    let mut decoder = FrameDecoder::new(max_len);
    let mut buf: Vec<u8> = Vec::new();
    let mut frames = Vec::new();
    for piece in input.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&buf) {
                Ok(Decoded::Frame { message, consumed }) => {
                    assert_eq!(consumed, message.len() + FRAME_HEADER_LEN);
                    assert!(message.len() <= max_len, "frame above the limit");
                    frames.push(buf[..consumed].to_vec());
                    buf.drain(..consumed);
                }
                Ok(Decoded::Incomplete { needed }) => {
                    assert!(
                        needed > buf.len(),
                        "Incomplete although {needed} are buffered"
                    );
                    assert!(needed <= usize::from(u16::MAX) + FRAME_HEADER_LEN);
                    break;
                }
                Err(e) => {
                    return Stream {
                        frames,
                        error: Some(e.kind()),
                        leftover: Vec::new(),
                    };
                }
            }
        }
    }
    Stream {
        frames,
        error: None,
        leftover: buf,
    }
}

/// The same with `decode_buf`, which splits frames off a `BytesMut` without copying.
fn decode_bytes_mut(input: &[u8], chunk: usize, max_len: usize) -> Stream {
    let mut decoder = FrameDecoder::new(max_len);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in input.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode_buf(&mut buf) {
                Ok(Some(message)) => {
                    let mut frame = frame_header(message.len()).expect("small").to_vec();
                    frame.extend_from_slice(&message);
                    frames.push(frame);
                }
                Ok(None) => break,
                Err(e) => {
                    return Stream {
                        frames,
                        error: Some(e.kind()),
                        leftover: Vec::new(),
                    };
                }
            }
        }
    }
    Stream {
        frames,
        error: None,
        leftover: buf.to_vec(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(control & 0x3f) + 1;
    let max_len = if control & 0x40 != 0 {
        96
    } else {
        usize::from(u16::MAX)
    };

    let chunked = decode_in_chunks(stream, chunk, max_len);
    let whole = decode_in_chunks(stream, stream.len().max(1), max_len);
    assert_eq!(
        chunked, whole,
        "cutting the stream changed what was decoded"
    );
    assert_eq!(
        decode_bytes_mut(stream, chunk, max_len),
        whole,
        "decode_buf disagrees with decode"
    );
    if whole.error.is_none() {
        let decoded: usize = whole.frames.iter().map(Vec::len).sum();
        assert_eq!(decoded + whole.leftover.len(), stream.len());
    }

    for frame in &whole.frames {
        let message = &frame[FRAME_HEADER_LEN..];
        lqd_fuzz::check_message(message);
        if let Ok(repr) = MessageRepr::parse(message) {
            let mut out = vec![0xa5; frame.len()];
            assert_eq!(
                encode_frame(&repr, &mut out).expect("re-frame"),
                frame.len()
            );
            assert_eq!(&out, frame, "re-framed bytes differ");
        }
    }
});
