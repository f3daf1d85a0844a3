namespace KvmStorage.Core.Domains;

/// <summary>
/// How qemu opens a disk's image and how the guest sees the disk, apart from which image it is and where it sits:
/// the <c>&lt;driver&gt;</c> cache, io and discard modes, <c>&lt;readonly/&gt;</c>, <c>&lt;shareable/&gt;</c>,
/// <c>&lt;serial&gt;</c> and <c>&lt;boot order&gt;</c> of libvirt's formatdomain. The one model of these settings
/// behind <see cref="DomainDisk"/>, <see cref="VMDisk"/>, <see cref="DiskSpec"/>, <see cref="DiskAttachRequest"/> and
/// <see cref="DiskUpdate"/>. A null setting is one not given: absent from a disk read from its XML (whose read-only
/// and shareable flags are always given), libvirt's default in a new disk (read-only for a cdrom, else read-write and
/// not shareable), left as it is in an update.
/// </summary>
public sealed record DiskSettings
{
    /// <summary><c>&lt;driver cache&gt;</c>: default, none, writethrough, writeback, directsync or unsafe.</summary>
    public string? Cache { get; init; }

    /// <summary><c>&lt;driver io&gt;</c>: threads, native or io_uring.</summary>
    public string? Io { get; init; }

    /// <summary><c>&lt;driver discard&gt;</c>: unmap or ignore.</summary>
    public string? Discard { get; init; }

    /// <summary><c>&lt;readonly/&gt;</c>.</summary>
    public bool? ReadOnly { get; init; }

    /// <summary><c>&lt;shareable/&gt;</c>: several VMs may use the image at once.</summary>
    public bool? Shareable { get; init; }

    /// <summary><c>&lt;serial&gt;</c>; in an update, an empty string removes it.</summary>
    public string? Serial { get; init; }

    /// <summary><c>&lt;boot order&gt;</c>; in an update, 0 removes it.</summary>
    public int? BootOrder { get; init; }

    /// <summary>True when no setting is given: an update with these settings changes nothing.</summary>
    public bool IsEmpty => Equals(new DiskSettings());
}
