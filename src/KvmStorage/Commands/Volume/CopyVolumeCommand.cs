using System.Management.Automation;
using KvmStorage.Core.Images;
using KvmStorage.Core.Images.Convert;
using KvmStorage.Core.Pools;
using KvmStorage.Core.Volumes;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.Volume;

/// <summary>
/// Copy-Volume: a full, independent copy of a volume (an overlay is flattened unless -KeepBackingFile), or with
/// -Linked a qcow2 overlay that reads through to the original.
/// </summary>
[Cmdlet(VerbsCommon.Copy, "Volume", SupportsShouldProcess = true, DefaultParameterSetName = FullCopySet)]
[OutputType(typeof(StorageVolume))]
public sealed class CopyVolumeCommand : KvmCmdlet
{
    private const string FullCopySet = "FullCopy";
    private const string LinkedSet = "Linked";

    /// <summary>The volume to copy: the object Get-Volume emits, or the path of an image file.</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipeline = true)]
    public VolumeReference Volume { get; set; } = null!;

    /// <summary>Name of the copy.</summary>
    [Parameter(Mandatory = true, Position = 1)]
    [ValidateNotNullOrEmpty]
    public string Name { get; set; } = string.Empty;

    /// <summary>Pool of the copy; default: the source's pool.</summary>
    [Parameter]
    [ArgumentCompleter(typeof(PoolNameCompleter))]
    public PoolReference? Pool { get; set; }

    /// <summary>
    /// Format of the copy: raw, qcow2, vmdk, vhdx, vpc or vdi; default: the one the new name's extension says (.qcow2,
    /// .raw or .img, .vmdk, .vhdx, .vhd, .vdi), else the source's (qcow2 for formats the module does not write). A
    /// contradicting extension is refused.
    /// </summary>
    [Parameter(ParameterSetName = FullCopySet)]
    [ValidateSet("raw", "qcow2", "vmdk", "vhdx", "vpc", "vdi")]
    public string? Format { get; set; }

    /// <summary>Make a linked clone: an empty qcow2 overlay backed by the source (the source must then stay unchanged).</summary>
    [Parameter(Mandatory = true, ParameterSetName = LinkedSet)]
    public SwitchParameter Linked { get; set; }

    /// <summary>Copy an overlay as an overlay of the same backing file instead of flattening the chain into the copy.</summary>
    [Parameter(ParameterSetName = FullCopySet)]
    public SwitchParameter KeepBackingFile { get; set; }

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
            string pool = Pool?.Name ?? source.Pool ?? throw new Core.Errors.KvmStorageException(
                Core.Errors.ErrorKind.InvalidArgument, VolumeErrorIds.VolumeOutsidePool, $"'{source.Path}' is in no pool; name the target with -Pool.", source.Path);
            var transfer = new VolumeTransfer(KvmHost);
            string destination = transfer.NewVolumePath(pool, Name);
            if (Linked)
            {
                if (ShouldProcess(source.Path, $"Create linked clone {Name} in pool {pool}"))
                {
                    WriteObject(transfer.Link(source, destination, Permissions.DefaultVolumeMode));
                }

                return;
            }

            // A LUKS file copies to a LUKS file (raw, encrypted); a copy of an encrypted volume is encrypted too.
            ImageFormat writable = source.ImageFormat is ImageFormat.Raw or ImageFormat.Qcow2 or ImageFormat.Vmdk or ImageFormat.Vhdx or ImageFormat.Vpc or ImageFormat.Vdi
                ? source.ImageFormat
                : source.ImageFormat == ImageFormat.Luks ? ImageFormat.Raw : ImageFormat.Qcow2;
            ImageFormat format = VolumeNames.FormatFor(Name, ConvertParameters.ParseFormat(Format), writable);
            using ImagePassphrase? passphrase = Passphrases.From(Passphrase);
            using ImagePassphrase? newPassphrase = Passphrases.From(NewPassphrase);
            ConvertOptions options = ConvertParameters.Build(format, false, null, Preallocation.Off, null, null, Permissions.DefaultVolumeMode) with
            {
                // A copy of a fixed VHD, VHDX or VDI in its own format stays fixed.
                Fixed = format == source.ImageFormat && source.DiskType == DiskType.Fixed && format is ImageFormat.Vhdx or ImageFormat.Vpc or ImageFormat.Vdi,
                SourcePassphrase = passphrase,
                Encryption = Passphrases.Encryption(Encrypt || source.Encryption is not null, passphrase, newPassphrase, IterationTime, source.Path),
            };
            bool keep = KeepBackingFile && source.BackingPath is not null;
            string what = keep ? $"Copy to {Name} in pool {pool}, keeping backing file {source.BackingPath}" : $"Copy to {format.ToQemuName()} volume {Name} in pool {pool}";
            if (ShouldProcess(source.Path, what))
            {
                StorageVolume copy = RunWithProgress("Copy-Volume", $"Copying {source.Name} to {Name}", (progress, token) => keep
                    ? transfer.CopyKeepingBacking(source, destination, options, progress, token)
                    : transfer.Convert(source, destination, options, progress, token));
                WriteObject(copy);
            }
        });
    }
}
