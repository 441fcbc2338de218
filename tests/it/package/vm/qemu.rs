//! The virtual machine: QEMU with a virtio GPU, a virtio tablet, user
//! networking and this machine's root over 9p, driven through QMP (its
//! screen, its tablet), killed on drop.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::frame::Frame;
use super::guest::Kernel;
use super::{HEIGHT, WIDTH};

/// A QEMU process with its QMP socket; killed on drop, which prints the
/// guest's console when the test is failing.
pub(super) struct Vm {
    child: Child,
    qmp: Qmp,
    console: PathBuf,
    qemu_log: PathBuf,
    dir: PathBuf,
    pub(super) started: Instant,
    frames: u32,
    /// Holds the QMP socket, kept out of target/ (a socket's path is
    /// limited to about 100 bytes).
    _socket_dir: tempfile::TempDir,
}

impl Vm {
    pub(super) fn boot(kernel: &Kernel, initramfs: &Path, dir: &Path) -> Vm {
        let socket_dir = tempfile::tempdir().unwrap();
        let socket = socket_dir.path().join("qmp");
        let console = dir.join("console.log");
        let qemu_log = dir.join("qemu.log");
        let accelerator = if kvm_works(kernel, dir) { "kvm" } else { "tcg" };
        let mut qemu = Command::new("qemu-system-x86_64");
        qemu.arg("-nodefaults")
            .args(["-machine", "pc", "-accel", accelerator])
            .args(["-m", "1024", "-smp", "2"])
            .arg("-kernel")
            .arg(&kernel.image)
            .arg("-initrd")
            .arg(initramfs)
            .args([
                "-append",
                "console=ttyS0 rdinit=/init panic=-1 net.ifnames=0 loglevel=4",
            ])
            .args(["-display", "none", "-vga", "none"])
            .args([
                "-device",
                &format!("virtio-gpu-pci,xres={WIDTH},yres={HEIGHT}"),
            ])
            .args(["-device", "virtio-tablet-pci"])
            .args(["-netdev", "user,id=n", "-device", "virtio-net-pci,netdev=n"])
            .args([
                "-virtfs",
                // remap: the host's root spans several file systems, whose
                // inode numbers would collide in one export.
                "local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap",
            ])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", socket.display()))
            .arg("-no-reboot")
            .stdin(Stdio::null());
        let log = std::fs::File::create(&qemu_log).unwrap();
        qemu.stdout(log.try_clone().unwrap()).stderr(log);
        let started = Instant::now();
        let mut child = qemu.spawn().expect("starting qemu-system-x86_64");
        let qmp = match Qmp::connect(&socket, &mut child) {
            Ok(qmp) => qmp,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "QMP: {e}\n{}",
                    std::fs::read_to_string(&qemu_log).unwrap_or_default()
                );
            }
        };
        Vm {
            child,
            qmp,
            console,
            qemu_log,
            dir: dir.to_owned(),
            started,
            frames: 0,
            _socket_dir: socket_dir,
        }
    }

    pub(super) fn accelerator(&mut self) -> &'static str {
        let kvm = self.qmp.execute("query-kvm", serde_json::json!({}));
        if kvm["enabled"] == true { "kvm" } else { "tcg" }
    }

    pub(super) fn console(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.console).unwrap_or_default()).into_owned()
    }

    /// Fails the test if QEMU is gone or the guest said it failed.
    fn check_alive(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("QEMU exited ({status})");
        }
        let console = self.console();
        if let Some(line) = console
            .lines()
            .find(|l| l.contains("GONGKAI-VM: failed") || l.contains("GONGKAI-VM: gongkaid exited"))
        {
            panic!("the guest says: {line}");
        }
    }

    /// Waits until the console holds `text`; returns the time since boot.
    pub(super) fn wait_for_console(&mut self, text: &str, within: Duration) -> Duration {
        let deadline = Instant::now() + within;
        loop {
            if self.console().contains(text) {
                return self.started.elapsed();
            }
            self.check_alive();
            assert!(
                Instant::now() < deadline,
                "no {text:?} on the guest's console within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The VM's display as QEMU holds it.
    fn screendump(&mut self) -> Frame {
        self.frames += 1;
        let path = self.dir.join(format!("frame-{}.ppm", self.frames));
        self.qmp.execute(
            "screendump",
            serde_json::json!({ "filename": path.to_str().unwrap() }),
        );
        let bytes = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        Frame::from_ppm(&bytes).unwrap_or_else(|e| panic!("the screendump: {e}"))
    }

    /// Screendumps every second until one satisfies `ok`.
    pub(super) fn wait_for_frame(
        &mut self,
        what: &str,
        within: Duration,
        ok: impl Fn(&Frame) -> bool,
    ) -> Frame {
        let deadline = Instant::now() + within;
        loop {
            let frame = self.screendump();
            if frame.width == WIDTH && frame.height == HEIGHT && ok(&frame) {
                return frame;
            }
            self.check_alive();
            if Instant::now() > deadline {
                frame.save("vm-last.png");
                panic!(
                    "{what}: not on the VM's display within {within:?} (the last frame is \
                     {}×{}, {} colours)",
                    frame.width,
                    frame.height,
                    frame.distinct_colours()
                );
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// A tap at `(x, y)` of the display: the tablet moves there (absolute
    /// axes, 0 to 32767 across the screen), presses and releases.
    pub(super) fn touch(&mut self, x: u32, y: u32) {
        let abs = |v: u32, size: u32| (v as u64 * 0x7fff / size as u64) as u32;
        self.qmp.execute(
            "input-send-event",
            serde_json::json!({ "events": [
                { "type": "abs", "data": { "axis": "x", "value": abs(x, WIDTH) } },
                { "type": "abs", "data": { "axis": "y", "value": abs(y, HEIGHT) } },
            ]}),
        );
        for down in [true, false] {
            std::thread::sleep(Duration::from_millis(100));
            self.qmp.execute(
                "input-send-event",
                serde_json::json!({ "events": [
                    { "type": "btn", "data": { "down": down, "button": "left" } },
                ]}),
            );
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let console = self.console();
            let tail: Vec<&str> = console.lines().rev().take(200).collect();
            eprintln!("--- the guest's console (last {} lines) ---", tail.len());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
            eprintln!(
                "--- QEMU ---\n{}",
                std::fs::read_to_string(&self.qemu_log).unwrap_or_default()
            );
        }
    }
}

/// Whether KVM runs a guest here: `/dev/kvm` opens, and the kernel, booted
/// with KVM, prints its banner within 10 seconds (it takes one). A
/// /dev/kvm that opens is not enough: in some sandboxes QEMU then aborts,
/// or the guest never runs.
fn kvm_works(kernel: &Kernel, dir: &Path) -> bool {
    let opens = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !opens {
        return false;
    }
    let console = dir.join("kvm-probe.log");
    let Ok(mut probe) = Command::new("qemu-system-x86_64")
        .args([
            "-nodefaults",
            "-machine",
            "pc",
            "-accel",
            "kvm",
            "-m",
            "256",
        ])
        .arg("-kernel")
        .arg(&kernel.image)
        // earlyprintk: the banner comes at once, not when the console
        // driver starts.
        .args(["-append", "earlyprintk=ttyS0 loglevel=7 panic=-1"])
        .args(["-display", "none", "-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let works = loop {
        let text = std::fs::read(&console).unwrap_or_default();
        if String::from_utf8_lossy(&text).contains("Linux version") {
            break true;
        }
        if Instant::now() > deadline || probe.try_wait().unwrap().is_some() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = probe.kill();
    let _ = probe.wait();
    works
}

/// QEMU's machine protocol over its unix socket: JSON lines, asynchronous
/// events between the answers.
struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    fn connect(path: &Path, qemu: &mut Child) -> Result<Qmp, String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(stream) => break stream,
                Err(e) => {
                    if let Some(status) = qemu.try_wait().unwrap() {
                        return Err(format!("QEMU exited ({status})"));
                    }
                    if Instant::now() > deadline {
                        return Err(format!("no socket at {}: {e}", path.display()));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut qmp = Qmp {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        };
        let greeting = qmp.read()?;
        if greeting.get("QMP").is_none() {
            return Err(format!("not a QMP greeting: {greeting}"));
        }
        qmp.send("qmp_capabilities", serde_json::json!({}))
    }

    fn read(&mut self) -> Result<serde_json::Value, String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err("QEMU closed its QMP socket".to_owned()),
            Ok(_) => serde_json::from_str(&line).map_err(|e| format!("{e}: {line}")),
            Err(e) => Err(format!("reading QMP: {e}")),
        }
    }

    fn send(mut self, command: &str, arguments: serde_json::Value) -> Result<Qmp, String> {
        self.request(command, arguments)?;
        Ok(self)
    }

    fn request(
        &mut self,
        command: &str,
        arguments: serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        let request = serde_json::json!({ "execute": command, "arguments": arguments });
        writeln!(self.writer, "{request}").map_err(|e| format!("writing QMP: {e}"))?;
        loop {
            let answer = self.read()?;
            if let Some(value) = answer.get("return") {
                return Ok(value.clone());
            }
            if let Some(error) = answer.get("error") {
                return Err(format!("{command}: {error}"));
            }
            // An event ("event": …): not the answer.
        }
    }

    fn execute(&mut self, command: &str, arguments: serde_json::Value) -> serde_json::Value {
        self.request(command, arguments)
            .unwrap_or_else(|e| panic!("QMP {e}"))
    }
}
