using System.Management.Automation;
using KvmStorage.Core.Images;
using KvmStorage.Core.Pools;
using KvmStorage.Core.Sizes;
using KvmStorage.Core.Volumes;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.Volume;

/// <summary>New-Volume: creates a qcow2, raw, vmdk, vhdx, vpc or vdi image in a pool's folder with the native image engine.</summary>
[Cmdlet(VerbsCommon.New, "Volume", SupportsShouldProcess = true)]
[OutputType(typeof(StorageVolume))]
public sealed class NewVolumeCommand : KvmCmdlet
{
    /// <summary>The pool, by name or as the object Get-StoragePool emits.</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
    [ArgumentCompleter(typeof(PoolNameCompleter))]
    public PoolReference Pool { get; set; } = null!;

    /// <summary>File name of the new image inside the pool folder (binds by property name, for records from Import-Csv).</summary>
    [Parameter(Mandatory = true, Position = 1, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    public string Name { get; set; } = string.Empty;

    /// <summary>Virtual size in bytes (8GB, or a string such as 8G or 512M); defaults to the backing volume's size.</summary>
    [Parameter(Position = 2, ValueFromPipelineByPropertyName = true)]
    [SizeTransformation]
    public ulong? Size { get; set; }

    /// <summary>
    /// Image format: qcow2, raw, vmdk, vhdx, vpc (VHD) or vdi. By default the name's extension decides (.qcow2, .raw or
    /// .img: raw, .vmdk, .vhdx, .vhd, .vdi), else qcow2; a format the extension contradicts (x.qcow2 as raw) is refused.
    /// </summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    [ValidateSet("qcow2", "raw", "vmdk", "vhdx", "vpc", "vdi", "")] // "": an empty CSV column, the format left to the name
    public string? Format { get; set; }

    /// <summary>Allocation up front: Off (sparse, default), Metadata (qcow2), Falloc, Full.</summary>
    [Parameter]
    public Preallocation Preallocation { get; set; }

    /// <summary>Backing image of a linked clone: a volume object or a path; the new image records its format.</summary>
    [Parameter]
    [Alias("BackingPath")]
    public VolumeReference? BackingVolume { get; set; }

    /// <summary>Format of the backing image; detected from its content when omitted.</summary>
    [Parameter]
    [ValidateSet("qcow2", "raw", "vmdk", "qcow", "vdi", "vpc", "vhdx")]
    public string? BackingFormat { get; set; }

    /// <summary>Record the backing path relative to the new image's folder instead of absolute.</summary>
    [Parameter]
    public SwitchParameter RelativeBackingPath { get; set; }

    /// <summary>qcow2 cluster size: a power of two from 512 bytes to 2 MiB (default 64 KiB); vhdx block size: 1 MiB to 256 MiB (default by size, as qemu-img).</summary>
    [Parameter]
    [SizeTransformation]
    public ulong ClusterSize { get; set; }

    /// <summary>vhdx, vpc, vdi: a fixed image (Hyper-V's fixed disk, VirtualBox's fixed size) rather than a dynamic one; still sparse on the host.</summary>
    [Parameter]
    public SwitchParameter Fixed { get; set; }

    /// <summary>vpc: record the size itself, rounded up to whole MiB (Azure's rule), rather than a CHS geometry (qemu's force_size).</summary>
    [Parameter]
    public SwitchParameter ForceSize { get; set; }

    /// <summary>qcow2 lazy refcounts (needs compat 1.1).</summary>
    [Parameter]
    public SwitchParameter LazyRefcounts { get; set; }

    /// <summary>qcow2 compatibility: 1.1 (default, version 3) or 0.10 (version 2, for very old QEMU).</summary>
    [Parameter]
    [ValidateSet("1.1", "0.10")]
    public string Compat { get; set; } = "1.1";

    /// <summary>qcow2 refcount width in bits: 1, 2, 4, 8, 16 (default), 32 or 64.</summary>
    [Parameter]
    [ValidateSet("1", "2", "4", "8", "16", "32", "64")]
    public string RefcountBits { get; set; } = "16";

    /// <summary>
    /// Encrypt the volume with LUKS, as libvirt and qemu do: qcow2 keeps a LUKS header inside; raw becomes a LUKS file
    /// (name it .luks, .raw or .img). Needs -Passphrase. Not with vmdk.
    /// </summary>
    [Parameter]
    public SwitchParameter Encrypt { get; set; }

    /// <summary>The passphrase of the encrypted volume (a SecureString: Read-Host -AsSecureString, or a vault).</summary>
    [Parameter]
    public System.Security.SecureString? Passphrase { get; set; }

    /// <summary>Milliseconds PBKDF2 should take to open the key slot (qemu's iter-time; default 2000).</summary>
    [Parameter]
    [ValidateRange(10, 60000)]
    public int IterationTime { get; set; } = 2000;

    /// <summary>Octal mode of the new file (default 0600, as libvirt).</summary>
    [Parameter]
    [ValidatePattern("^0?[0-7]{3,4}$")]
    public string Mode { get; set; } = "0600";

    /// <summary>Numeric owner (uid) of the new file, for example 64055 (libvirt-qemu on Debian).</summary>
    [Parameter]
    [ValidateRange(0, int.MaxValue)]
    public int Owner { get; set; } = -1;

    /// <summary>Numeric group (gid) of the new file.</summary>
    [Parameter]
    [ValidateRange(0, int.MaxValue)]
    public int Group { get; set; } = -1;

    protected override void ProcessRecord()
    {
        RunForItem(Name, () =>
        {
            VolumeNames.Validate(Name);
            Core.Pools.StoragePool pool = KvmHost.GetPool(Pool.Name);
            ImageFormat format = VolumeNames.FormatFor(Name, ConvertParameters.ParseFormat(Format), ImageFormat.Qcow2);
            // Null, not 0, when absent: a record from Import-Csv without a Size binds nothing and must not inherit one.
            bool sizeGiven = Size.HasValue;
            string? backingHostPath = null;
            if (BackingVolume is not null)
            {
                StorageVolume backing = ResolveVolume(BackingVolume);
                backingHostPath = backing.Path;
            }
            else if (!sizeGiven)
            {
                throw new Core.Errors.KvmStorageException(Core.Errors.ErrorKind.InvalidArgument, VolumeErrorIds.InvalidSize, "-Size is required unless -BackingVolume gives the size.", Name);
            }

            if (!Encrypt && Path.GetExtension(Name).Equals(".luks", StringComparison.OrdinalIgnoreCase))
            {
                throw new Core.Errors.KvmStorageException(Core.Errors.ErrorKind.InvalidArgument, Core.Images.Luks.LuksErrorIds.InvalidEncryptionOptions, $"'{Name}' names an encrypted (LUKS) image: add -Encrypt and -Passphrase, or choose another name.", Name);
            }

            using ImagePassphrase? passphrase = Passphrases.From(Passphrase);
            UnixFileMode mode = Permissions.TryParseMode(Mode, out UnixFileMode m) ? m : Permissions.DefaultVolumeMode;
            var request = new VolumeCreateRequest
            {
                Pool = pool.Name,
                Name = Name,
                BackingPath = backingHostPath,
                RelativeBacking = RelativeBackingPath,
                Image = new ImageCreateOptions
                {
                    Format = format,
                    VirtualSize = Size,
                    Preallocation = Preallocation,
                    ClusterSize = MyInvocation.BoundParameters.ContainsKey(nameof(ClusterSize)) ? checked((uint)ClusterSize) : null,
                    Fixed = Fixed,
                    ForceSize = ForceSize,
                    Compat = Compat,
                    LazyRefcounts = LazyRefcounts,
                    RefcountBits = int.Parse(RefcountBits, System.Globalization.CultureInfo.InvariantCulture),
                    BackingFormat = BackingFormat is not null && ImageFormats.TryParse(BackingFormat, out ImageFormat bf) ? bf : null,
                    Mode = mode,
                    Owner = Owner,
                    Group = Group,
                    Encryption = Passphrases.Encryption(Encrypt, passphrase, null, IterationTime, Name),
                },
            };
            string what = $"Create {(Encrypt ? "encrypted " : string.Empty)}{format.ToQemuName()} volume of {(Size is { } size ? ByteSize.Format(size) : "the backing size")}" + (backingHostPath is null ? string.Empty : $" backed by {backingHostPath}");
            if (ShouldProcess($"{Name} in pool {pool.Name} ({pool.Path})", what))
            {
                StorageVolume created = RunWithProgress("New-Volume", $"Creating {Name}", (progress, token) => KvmHost.CreateVolume(request, progress, token));
                WriteObject(created);
            }
        });
    }
}
