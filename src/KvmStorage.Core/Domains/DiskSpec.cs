namespace KvmStorage.Core.Domains;

/// <summary>What to attach: one new <c>&lt;disk&gt;</c>.</summary>
public sealed record DiskSpec
{
    /// <summary>The host path of the image or block device; null for a pool volume or an empty cdrom/floppy.</summary>
    public string? SourcePath { get; init; }

    /// <summary>With <see cref="Volume"/>: a pool volume, written as <c>type='volume'</c> when <see cref="AsVolumeSource"/> is set.</summary>
    public string? Pool { get; init; }

    public string? Volume { get; init; }

    /// <summary>Refer to the disk as <c>&lt;source pool= volume=/&gt;</c> rather than by path.</summary>
    public bool AsVolumeSource { get; init; }

    /// <summary><c>source dev=</c> and <c>type='block'</c> instead of <c>source file=</c>.</summary>
    public bool SourceIsBlockDevice { get; init; }

    /// <summary>
    /// The image format, always written as <c>&lt;driver name='qemu' type='…'/&gt;</c> because libvirt treats a missing type
    /// as raw. Required for disk and lun; cdrom and floppy default to raw.
    /// </summary>
    public string? Format { get; init; }

    /// <summary>
    /// The libvirt secret of a LUKS-encrypted image: written as <c>&lt;encryption format='luks'&gt;&lt;secret
    /// type='passphrase' uuid='…'/&gt;&lt;/encryption&gt;</c> inside <c>&lt;source&gt;</c>, where libvirt 3.9+ prefers it.
    /// </summary>
    public Guid? LuksSecret { get; init; }

    /// <summary>The target name; null picks the next free one for the bus.</summary>
    public string? Target { get; init; }

    /// <summary>
    /// An explicit <c>&lt;address type='drive'&gt;</c>; null lets libvirt derive it from the target. Set by
    /// <see cref="DiskTargetPlanner.Choose"/> only when no free target name derives a free address.
    /// </summary>
    public DriveAddress? Address { get; init; }

    /// <summary>virtio for disks, sata for cdroms, fdc for floppies, scsi for luns when null.</summary>
    public string? Bus { get; init; }

    /// <summary>disk (default), cdrom, floppy or lun.</summary>
    public string Device { get; init; } = "disk";

    /// <summary>Cache, io and discard modes, read-only, shareable, serial and boot order; those not given take libvirt's defaults.</summary>
    public DiskSettings Settings { get; init; } = new();

    /// <summary>The bus the disk goes on: <see cref="Bus"/>, else the one a device of its kind gets.</summary>
    public string BusOrDefault => Bus ?? Device switch
    {
        "cdrom" => "sata",
        "floppy" => "fdc",
        "lun" => "scsi",
        _ => "virtio",
    };
}
