namespace KvmStorage.Core.Domains;

/// <summary>What Add-VMDisk asks for. The image is one of: <see cref="LocalImagePath"/>, or <see cref="Pool"/> and <see cref="VolumeName"/>; neither for an empty cdrom.</summary>
public sealed record DiskAttachRequest
{
    public required string VMName { get; init; }

    /// <summary>The image on this machine (under the host root).</summary>
    public string? LocalImagePath { get; init; }

    public string? Pool { get; init; }

    public string? VolumeName { get; init; }

    /// <summary>Refer to the image as <c>&lt;source pool= volume=/&gt;</c> (needs a pool volume).</summary>
    public bool AsVolumeSource { get; init; }

    /// <summary>The libvirt secret of an encrypted image; null finds the one whose usage is the image's path.</summary>
    public Guid? SecretUuid { get; init; }

    public string? Target { get; init; }

    public string? Bus { get; init; }

    public string Device { get; init; } = "disk";

    /// <summary>Cache, io and discard modes, read-only, shareable, serial and boot order; those not given take libvirt's defaults.</summary>
    public DiskSettings Settings { get; init; } = new();

    /// <summary>Attach even when the image is already attached (to this VM, or read-write to another).</summary>
    public bool Force { get; init; }

    /// <summary>Persistent definition, running VM, or (Default) what the backend does by default.</summary>
    public DeviceScope Scope { get; init; }
}
