// Offline stand-in for daily-js, served in place of the Playground's daily-esm-*.js asset.
//
// The Playground's SmallWebRTC transport keeps its devices in DailyMediaManager, which drives a
// daily-js call object, and daily-js fetches its "call machine" from c.daily.co at run time: with
// no internet (CI) the microphone never opens. This stub gives DailyMediaManager the few call-object
// methods it uses, on the browser's own getUserMedia; everything else on the page stays real.

class LocalCall {
  constructor() {
    this.handlers = {};
    this.local = {local: true, session_id: 'local', user_id: 'local', user_name: '', tracks: {}};
    this.audioOn = false;
  }

  on(action, handler) {
    (this.handlers[action] ||= []).push(handler);
    return this;
  }

  off(action, handler) {
    this.handlers[action] = (this.handlers[action] || []).filter((h) => h !== handler);
    return this;
  }

  emit(action, event) {
    for (const handler of this.handlers[action] || []) handler({action, ...event});
  }

  micTrack() {
    return this.local.tracks.audio?.persistentTrack;
  }

  async selectedDevices() {
    const devices = await navigator.mediaDevices.enumerateDevices();
    const micId = this.micTrack()?.getSettings().deviceId;
    const mics = devices.filter((d) => d.kind === 'audioinput');
    return {
      camera: {},
      mic: mics.find((d) => d.deviceId === micId) || mics[0] || {},
      speaker: devices.find((d) => d.kind === 'audiooutput') || {},
    };
  }

  async startCamera({startAudioOff = false} = {}) {
    const stream = await navigator.mediaDevices.getUserMedia({audio: true});
    const track = stream.getAudioTracks()[0];
    this.local.tracks.audio = {persistentTrack: track, state: 'playable'};
    this.setLocalAudio(!startAudioOff);
    this.emit('track-started', {participant: this.local, track, type: 'audio'});
    return this.selectedDevices();
  }

  async enumerateDevices() {
    return {devices: await navigator.mediaDevices.enumerateDevices()};
  }

  participants() {
    return {local: this.local};
  }

  setLocalAudio(on) {
    this.audioOn = on;
    const track = this.micTrack();
    if (track) track.enabled = on;
    return this;
  }

  localAudio() { return this.audioOn; }
  localVideo() { return false; }
  localScreenAudio() { return false; }
  localScreenVideo() { return false; }
  setLocalVideo() { return this; }
  setInputDevicesAsync() { return this.selectedDevices(); }
  setOutputDeviceAsync() { return this.selectedDevices(); }
  isLocalAudioLevelObserverRunning() { return false; }
  async startLocalAudioLevelObserver() {}
  startScreenShare() {}
  stopScreenShare() {}
  leave() {}
}

let call = null;

// The bundle's only export, under its minified name: the Daily class with these two statics.
export const t = {getCallInstance: () => call, createCallObject: () => (call = new LocalCall())};
