using KvmStorage.Core.Volumes;

namespace KvmStorage.Core.Domains;

/// <summary>A disk of a VM as the module reports it: the domain's <c>&lt;disk&gt;</c> plus the image behind it.</summary>
public sealed class VMDisk
{
    public required string VMName { get; init; }

    public required string Target { get; init; }

    /// <summary>The bus as written, or as libvirt infers it from the target prefix.</summary>
    public string? Bus { get; init; }

    public required string Device { get; init; }

    public required string Type { get; init; }

    /// <summary>The image's host path: the file or device, or a pool volume resolved to its path; null for an empty drive.</summary>
    public string? Source { get; init; }

    /// <summary>The pool holding the image (for <c>type='volume'</c> disks, the pool named in the XML).</summary>
    public string? Pool { get; init; }

    public string? VolumeName { get; init; }

    public string? Format { get; init; }

    public string? Cache { get; init; }

    public string? Io { get; init; }

    public string? Discard { get; init; }

    public bool ReadOnly { get; init; }

    public bool Shareable { get; init; }

    public string? Serial { get; init; }

    public int? BootOrder { get; init; }

    public bool IsEmpty { get; init; }

    /// <summary>The image as a volume, where it could be read; null for empty drives, network disks and unreadable files.</summary>
    public StorageVolume? Volume { get; init; }

    public required string HostName { get; init; }

    /// <summary>Persistent, Live (the running VM only) or Both; offline, always Persistent.</summary>
    public VMDiskScope Scope { get; init; } = VMDiskScope.Persistent;

    public required DomainDisk Disk { get; init; }

    public override string ToString() => $"{VMName}:{Target}";
}

/// <summary>What Add-VMDisk asks for. The image is one of: <see cref="LocalImagePath"/>, or <see cref="Pool"/> and <see cref="VolumeName"/>; neither for an empty cdrom.</summary>
public sealed class DiskAttachRequest
{
    public required string VMName { get; init; }

    /// <summary>The image on this machine (under the host root).</summary>
    public string? LocalImagePath { get; init; }

    public string? Pool { get; init; }

    public string? VolumeName { get; init; }

    /// <summary>Refer to the image as <c>&lt;source pool= volume=/&gt;</c> (needs a pool volume).</summary>
    public bool AsVolumeSource { get; init; }

    public string? Target { get; init; }

    public string? Bus { get; init; }

    public string Device { get; init; } = "disk";

    public string? Cache { get; init; }

    public string? Io { get; init; }

    public string? Discard { get; init; }

    public bool? ReadOnly { get; init; }

    public bool Shareable { get; init; }

    public string? Serial { get; init; }

    public int? BootOrder { get; init; }

    /// <summary>Attach even when the image is already attached (to this VM, or read-write to another).</summary>
    public bool Force { get; init; }

    /// <summary>Persistent definition, running VM, or (Default) what the backend does by default.</summary>
    public DeviceScope Scope { get; init; }
}
