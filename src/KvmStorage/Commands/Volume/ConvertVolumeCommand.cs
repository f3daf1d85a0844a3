using System.Management.Automation;
using KvmStorage.Core.Images;
using KvmStorage.Core.Images.Convert;
using KvmStorage.Core.Pools;
using KvmStorage.Core.Volumes;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.Volume;

/// <summary>
/// Convert-Volume: writes a volume's contents into a new image of another format (or other options), like
/// <c>qemu-img convert</c>; never in place, except that -Replace swaps the finished image in for the original.
/// </summary>
[Cmdlet(VerbsData.Convert, "Volume", SupportsShouldProcess = true, DefaultParameterSetName = NewVolumeSet)]
[OutputType(typeof(StorageVolume))]
public sealed class ConvertVolumeCommand : KvmCmdlet
{
    private const string NewVolumeSet = "NewVolume";
    private const string ReplaceSet = "Replace";

    /// <summary>The volume to convert: the object Get-Volume emits, or the path of an image file.</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipeline = true)]
    public VolumeReference Volume { get; set; } = null!;

    /// <summary>Output format: raw, qcow2, vmdk (streamOptimized, for VMware), vhdx (Hyper-V), vpc (VHD: Hyper-V, Azure) or vdi (VirtualBox).</summary>
    [Parameter(Mandatory = true, Position = 1)]
    [ValidateSet("raw", "qcow2", "vmdk", "vhdx", "vpc", "vdi")]
    public string Format { get; set; } = "qcow2";

    /// <summary>Name of the new volume; default: the source's base name with the new format's extension.</summary>
    [Parameter(ParameterSetName = NewVolumeSet)]
    [ValidateNotNullOrEmpty]
    public string? Name { get; set; }

    /// <summary>Pool of the new volume; default: the source's pool.</summary>
    [Parameter(ParameterSetName = NewVolumeSet)]
    [ArgumentCompleter(typeof(PoolNameCompleter))]
    public PoolReference? Pool { get; set; }

    /// <summary>Replace the original with the converted image (same name), atomically once it is complete.</summary>
    [Parameter(Mandatory = true, ParameterSetName = ReplaceSet)]
    public SwitchParameter Replace { get; set; }

    /// <summary>qcow2: compress clusters (those that do not shrink are stored as they are).</summary>
    [Parameter]
    public SwitchParameter Compress { get; set; }

    /// <summary>Codec of -Compress: zlib (default, every QEMU) or zstd (QEMU 5.1+, faster).</summary>
    [Parameter]
    [ValidateSet("zlib", "zstd")]
    public string CompressionType { get; set; } = "zlib";

    /// <summary>Allocation of the output: Off (sparse, default), Metadata (qcow2), Falloc, Full.</summary>
    [Parameter]
    public Preallocation Preallocation { get; set; }

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

    /// <summary>qcow2 compatibility: 1.1 (default, version 3) or 0.10 (version 2).</summary>
    [Parameter]
    [ValidateSet("1.1", "0.10")]
    public string Compat { get; set; } = "1.1";

    /// <summary>Encrypt the output with LUKS (qcow2 with a LUKS header inside, or raw as a LUKS file); its passphrase is -NewPassphrase, else -Passphrase.</summary>
    [Parameter]
    public SwitchParameter Encrypt { get; set; }

    /// <summary>The passphrase of an encrypted source (and of the output with -Encrypt, unless -NewPassphrase is given).</summary>
    [Parameter]
    public System.Security.SecureString? Passphrase { get; set; }

    /// <summary>With -Encrypt: the output's own passphrase, when it is not the source's.</summary>
    [Parameter]
    public System.Security.SecureString? NewPassphrase { get; set; }

    /// <summary>With -Encrypt: milliseconds PBKDF2 should take to open the output's key slot (qemu's iter-time; default 2000).</summary>
    [Parameter]
    [ValidateRange(10, 60000)]
    public int IterationTime { get; set; } = 2000;

    protected override void ProcessRecord()
    {
        RunForItem(Volume.ToString(), () =>
        {
            StorageVolume source = ResolveVolume(Volume);
            ImageFormat format = ConvertParameters.ParseFormat(Format, ImageFormat.Qcow2);
            using ImagePassphrase? passphrase = Passphrases.From(Passphrase);
            using ImagePassphrase? newPassphrase = Passphrases.From(NewPassphrase);

            // The new name (given, or the source's with the format's extension) or, with -Replace, the kept name must
            // not contradict the format.
            VolumeNames.FormatFor(Replace ? source.Name : Name ?? VolumeTransfer.ExtensionOf(format), format, format);
            ConvertOptions options = ConvertParameters.Build(
                format,
                Compress,
                CompressionType,
                Preallocation,
                MyInvocation.BoundParameters.ContainsKey(nameof(ClusterSize)) ? ClusterSize : null,
                Compat,
                Permissions.DefaultVolumeMode) with
            {
                Fixed = Fixed,
                ForceSize = ForceSize,
                SourcePassphrase = passphrase,
                Encryption = Passphrases.Encryption(Encrypt, passphrase, newPassphrase, IterationTime, source.Path),
            };
            WarnIfDecrypting(source, options);
            var transfer = new VolumeTransfer(KvmHost);
            if (Replace)
            {
                transfer.PrepareReplace(source);
                if (ShouldProcess(source.Path, $"Convert to {Format} and replace the original"))
                {
                    StorageVolume replaced = RunWithProgress("Convert-Volume", $"Converting {source.Name} to {Format}", (progress, token) => transfer.Replace(source, options, progress, token));
                    WriteObject(replaced);
                }

                return;
            }

            string pool = Pool?.Name ?? source.Pool ?? throw new Core.Errors.KvmStorageException(
                Core.Errors.ErrorKind.InvalidArgument, VolumeErrorIds.VolumeOutsidePool, $"'{source.Path}' is in no pool; name the target with -Pool.", source.Path);
            string name = Name ?? Path.GetFileNameWithoutExtension(source.Name) + VolumeTransfer.ExtensionOf(format);
            string destination = transfer.NewVolumePath(pool, name);
            if (ShouldProcess(source.Path, $"Convert to {Format} volume {name} in pool {pool}"))
            {
                StorageVolume created = RunWithProgress("Convert-Volume", $"Converting {source.Name} to {name}", (progress, token) => transfer.Convert(source, destination, options, progress, token));
                WriteObject(created);
            }
        });
    }
}
