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

    // The settings are the wrapped disk's own (DiskSettings); they stay flat properties here because scripts and the
    // format views read them as such.
    public string? Cache => Disk.Cache;

    public string? Io => Disk.Io;

    public string? Discard => Disk.Discard;

    public bool ReadOnly => Disk.ReadOnly;

    public bool Shareable => Disk.Shareable;

    public string? Serial => Disk.Serial;

    public int? BootOrder => Disk.BootOrder;

    public bool IsEmpty { get; init; }

    /// <summary>The image as a volume, where it could be read; null for empty drives, network disks and unreadable files.</summary>
    public StorageVolume? Volume { get; init; }

    public required string HostName { get; init; }

    /// <summary>Persistent, Live (the running VM only) or Both; offline, always Persistent.</summary>
    public VMDiskScope Scope { get; init; } = VMDiskScope.Persistent;

    public required DomainDisk Disk { get; init; }

    public override string ToString() => $"{VMName}:{Target}";
}
