namespace KvmStorage.Core.Domains;

/// <summary>One <c>&lt;disk&gt;</c> of a domain, read as plain data. Changing it changes nothing: edit through <see cref="DomainDiskEditor"/>.</summary>
public sealed class DomainDisk
{
    /// <summary>The domain's name.</summary>
    public required string VMName { get; init; }

    /// <summary><c>&lt;target dev&gt;</c>, e.g. <c>vda</c>.</summary>
    public required string Target { get; init; }

    /// <summary><c>&lt;target bus&gt;</c>, or null when the file leaves it to libvirt's inference.</summary>
    public string? Bus { get; init; }

    /// <summary>disk, cdrom, floppy or lun (libvirt's default is disk).</summary>
    public required string Device { get; init; }

    /// <summary>file, block, volume, network, dir, nvme, … (libvirt's default is file).</summary>
    public required string Type { get; init; }

    /// <summary>The host path: <c>source file=</c> (type file) or <c>source dev=</c> (type block); null otherwise or when empty.</summary>
    public string? SourcePath { get; init; }

    /// <summary><c>source pool=</c> for type volume.</summary>
    public string? SourcePool { get; init; }

    /// <summary><c>source volume=</c> for type volume.</summary>
    public string? SourceVolume { get; init; }

    /// <summary><c>&lt;driver type&gt;</c>: qcow2, raw, …</summary>
    public string? Format { get; init; }

    /// <summary>Cache, io and discard modes, read-only, shareable, serial and boot order, as the XML has them.</summary>
    public required DiskSettings Settings { get; init; }

    // Flat views of Settings, as scripts read them on Get-VMDisk's Disk property.
    public string? Cache => Settings.Cache;

    public string? Io => Settings.Io;

    public string? Discard => Settings.Discard;

    public bool ReadOnly => Settings.ReadOnly == true;

    public bool Shareable => Settings.Shareable == true;

    public string? Serial => Settings.Serial;

    /// <summary><c>&lt;boot order&gt;</c>, or null.</summary>
    public int? BootOrder => Settings.BootOrder;

    /// <summary>A removable drive (cdrom or floppy) with no medium inserted.</summary>
    public bool IsEmpty { get; init; }

    public override string ToString() => $"{VMName}:{Target}";
}

/// <summary>One <c>&lt;controller&gt;</c> of a domain, read as plain data.</summary>
public sealed record DomainController(string Type, int? Index, string? Model);
