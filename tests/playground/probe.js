// Init script: measures, on the page's own clock, what the user says (the microphone track) and what
// the user hears (the bot's remote audio track), every 10 ms, as Web Audio RMS (full scale = 1).
// It keeps the page's peer connections so the test can read their getStats().
(() => {
  const probe = (window.__probe = {mic: [], bot: [], peerConnections: [], connectedAt: null});
  let context = null;

  function measure(stream, levels) {
    context ||= new AudioContext();
    const analyser = context.createAnalyser();
    analyser.fftSize = 512;
    context.createMediaStreamSource(stream).connect(analyser);
    const samples = new Float32Array(analyser.fftSize);
    setInterval(() => {
      analyser.getFloatTimeDomainData(samples);
      let sum = 0;
      for (const s of samples) sum += s * s;
      levels.push([performance.now(), Math.sqrt(sum / samples.length)]);
    }, 10);
  }

  const PeerConnection = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends PeerConnection {
    constructor(...args) {
      super(...args);
      probe.peerConnections.push(this);
      this.addEventListener('track', (e) => {
        if (e.track.kind === 'audio') measure(new MediaStream([e.track]), probe.bot);
      });
      this.addEventListener('connectionstatechange', () => {
        if (this.connectionState === 'connected') probe.connectedAt ??= performance.now();
      });
    }
  };

  const getUserMedia = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = async (constraints) => {
    const stream = await getUserMedia(constraints);
    if (stream.getAudioTracks().length) measure(stream, probe.mic);
    return stream;
  };
})();
