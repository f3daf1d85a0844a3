// KVM and libvirt are Linux facilities: the whole module is Linux-only.
[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]
