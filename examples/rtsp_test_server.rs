//! Test helper: serves an MP4 (H.264) clip over RTSP on loopback, standing in for a camera.
//!
//!   rtsp_test_server --port PORT --clip PATH [--mount /test] [--credentials USER:PASS]
//!                    [--audio-only]
//!
//! Binds 127.0.0.1 only. `--port 0` picks a free port. Once listening it prints exactly one
//! line, `READY rtsp://127.0.0.1:PORT/MOUNT`, to stdout, so a test can wait for it and read
//! the real port. SIGTERM/SIGINT quit the GLib main loop and exit 0; SIGKILL is fine too
//! (the listening socket has SO_REUSEADDR, so a restart on the same port binds at once).
//!
//! Media: `filesrc ! qtdemux ! h264parse ! rtph264pay` on the clip's video track, no
//! re-encoding. Every client gets its own pipeline (`shared=false`) starting at the clip's
//! beginning. The stream sinks sync to the pipeline clock, so clients receive it paced at real
//! time, as from a camera.
//!
//! Looping: the clip repeats for as long as the client stays connected, as one continuous
//! stream with no EOS and no timestamp jump (see `loop_at_eos`). The server announces an
//! open-ended `Range: npt=0-`; with the clip's real end rtspsrc would itself send EOS there.
//! A clip whose length the demuxer does not report plays once and then ends in EOS.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{ensure, Context};
use clap::Parser;
use gstreamer as gst;
use gstreamer::glib;
use gstreamer::glib::translate::IntoGlib;
use gstreamer::prelude::*;
use gstreamer_rtsp_server::prelude::*;
use gstreamer_rtsp_server::{
    RTSPAuth, RTSPMediaFactory, RTSPServer, RTSPToken, RTSP_PERM_MEDIA_FACTORY_ACCESS,
    RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, RTSP_TOKEN_MEDIA_FACTORY_ROLE,
};

#[derive(Parser)]
struct Args {
    /// TCP port for RTSP on 127.0.0.1; 0 picks a free one (printed in the READY line).
    #[arg(long)]
    port: u16,
    /// MP4 clip with an H.264 video track.
    #[arg(long)]
    clip: PathBuf,
    #[arg(long, default_value = "/test")]
    mount: String,
    /// Demand these credentials (`USER:PASS`, basic auth), as a camera with a password
    /// does: anyone else gets 401.
    #[arg(long)]
    credentials: Option<String>,
    /// Serve a live test tone (PCMA) and no video, as an intercom or a camera's
    /// audio-only profile does; `--clip` is still checked but not played.
    #[arg(long)]
    audio_only: bool,
}

/// Restarts the clip whenever `demux` reaches its end, invisibly to everything downstream of
/// its video `pad`: the EOS and the flushes of the seek back to 0 stop at the pad, and the
/// pad's offset grows by one clip length per pass so running time (hence the RTP timestamps)
/// keeps counting up. Segments leave the pad without a stop, so the stream looks endless.
fn loop_at_eos(demux: &gst::Element, pad: &gst::Pad) {
    if !pad.name().starts_with("video_") {
        return;
    }
    let demux = demux.downgrade();
    // Our latest seek's seqnum, which marks its flushes: a client's seek (RTSP PLAY with a
    // range) must still flush. Each seek needs a new one; qtdemux ignores a repeated seqnum.
    let ours = AtomicU32::new(0);
    let probe_types = gst::PadProbeType::EVENT_DOWNSTREAM | gst::PadProbeType::EVENT_FLUSH;
    // `Handled`, not `Drop`, swallows an event: gstreamer-rs has already taken it out of the
    // probe info, and GStreamer 1.22 then unrefs the NULL left there for a dropped one.
    pad.add_probe(probe_types, move |pad, info| {
        let Some(gst::PadProbeData::Event(event)) = &info.data else {
            return gst::PadProbeReturn::Ok;
        };
        match event.view() {
            gst::EventView::FlushStart(_) | gst::EventView::FlushStop(_)
                if event.seqnum().into_glib() == ours.load(Ordering::SeqCst) =>
            {
                gst::PadProbeReturn::Handled
            }
            // An endless stream has no stop. With the clip's, the server would announce
            // `Range: npt=0-10` and rtspsrc would send EOS once past 10 s.
            gst::EventView::Segment(ev) => {
                let Some(segment) = ev.segment().downcast_ref::<gst::ClockTime>() else {
                    return gst::PadProbeReturn::Ok;
                };
                let mut open = segment.clone();
                open.set_stop(gst::ClockTime::NONE);
                open.set_duration(gst::ClockTime::NONE);
                let open = gst::event::Segment::builder(&open)
                    .seqnum(event.seqnum())
                    .running_time_offset(event.running_time_offset())
                    .build();
                info.data = Some(gst::PadProbeData::Event(open));
                gst::PadProbeReturn::Ok
            }
            gst::EventView::Eos(_) => {
                // The pad keeps the demuxer's own segment (with its stop) as the sticky one.
                let Some(pass) = pad.sticky_event::<gst::event::Segment>(0).and_then(|ev| {
                    let segment = ev.segment().downcast_ref::<gst::ClockTime>()?.clone();
                    segment.to_running_time(segment.stop())
                }) else {
                    eprintln!("rtsp_test_server: clip length unknown, not looping");
                    return gst::PadProbeReturn::Ok;
                };
                pad.set_offset(pad.offset() + pass.nseconds() as i64);
                let seek = gst::event::Seek::builder(
                    1.0,
                    gst::SeekFlags::FLUSH,
                    gst::SeekType::Set,
                    gst::ClockTime::ZERO,
                    gst::SeekType::None,
                    gst::ClockTime::NONE,
                )
                .build();
                ours.store(seek.seqnum().into_glib(), Ordering::SeqCst);
                // Not from here: this is the demuxer's streaming thread, which the seek stops.
                if let Some(demux) = demux.upgrade() {
                    demux.call_async(move |demux| {
                        if !demux.send_event(seek) {
                            eprintln!("rtsp_test_server: seek back to the start failed");
                        }
                    });
                }
                gst::PadProbeReturn::Handled
            }
            _ => gst::PadProbeReturn::Ok,
        }
    });
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(args.clip.is_file(), "no such clip: {}", args.clip.display());
    ensure!(args.mount.starts_with('/'), "--mount must start with '/'");
    let clip = args.clip.canonicalize()?;
    gst::init()?;

    let factory = RTSPMediaFactory::new();
    // The location is set per media below rather than spliced in here: no launch-line quoting.
    if args.audio_only {
        factory.set_launch(
            "( audiotestsrc is-live=true ! audioconvert ! audioresample ! alawenc \
             ! rtppcmapay name=pay0 pt=8 )",
        );
    } else {
        factory.set_launch(
            "( filesrc name=src ! qtdemux name=demux ! h264parse name=parse config-interval=-1 \
             ! rtph264pay name=pay0 pt=96 )",
        );
        factory.connect_media_configure(move |_, media| {
            let bin = media.element().downcast::<gst::Bin>().unwrap();
            bin.by_name("src").unwrap().set_property("location", &clip);
            bin.by_name("demux").unwrap().connect_pad_added(loop_at_eos);
        });
    }
    factory.set_shared(false);

    let server = RTSPServer::new();
    if let Some(credentials) = &args.credentials {
        let (user, pass) = credentials
            .split_once(':')
            .context("--credentials wants USER:PASS")?;
        let auth = RTSPAuth::new();
        let token = RTSPToken::builder()
            .field(RTSP_TOKEN_MEDIA_FACTORY_ROLE, "viewer")
            .build();
        auth.add_basic(RTSPAuth::make_basic(user, pass).as_str(), &token);
        server.set_auth(Some(&auth));
        factory.add_role_from_structure(
            &gst::Structure::builder("viewer")
                .field(RTSP_PERM_MEDIA_FACTORY_ACCESS, true)
                .field(RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, true)
                .build(),
        );
    }
    server.set_address("127.0.0.1");
    server.set_service(&args.port.to_string());
    server
        .mount_points()
        .context("server has no mount points")?
        .add_factory(&args.mount, factory);
    // attach() binds and listens before returning, so READY is true when printed.
    let _source = server
        .attach(None)
        .with_context(|| format!("cannot listen on 127.0.0.1:{}", args.port))?;

    let main_loop = glib::MainLoop::new(None, false);
    let quit = main_loop.clone();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])?;
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            // Via the loop's own context: a quit() that lands before run() would be lost.
            glib::MainContext::default().invoke(move || quit.quit());
        }
    });

    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "READY rtsp://127.0.0.1:{}{}",
        server.bound_port(),
        args.mount
    )?;
    out.flush()?;
    drop(out);

    main_loop.run();
    Ok(())
}
