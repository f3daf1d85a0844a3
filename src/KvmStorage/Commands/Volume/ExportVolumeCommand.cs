using System.Management.Automation;
using KvmStorage.Core.Images;
using KvmStorage.Core.Images.Convert;
using KvmStorage.Core.Pools;
using KvmStorage.Core.Volumes;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.Volume;

/// <summary>Export-Volume: writes a volume's contents (its chain flattened) to an image file outside the pools, for example a vmdk for VMware.</summary>
[Cmdlet(VerbsData.Export, "Volume", SupportsShouldProcess = true, DefaultParameterSetName = ByVolume)]
[OutputType(typeof(StorageVolume))]
public sealed class ExportVolumeCommand : VolumeFirstCmdlet
{
    /// <summary>The file to write (it must not exist); an existing folder receives a file named after the volume.</summary>
    [Parameter(Mandatory = true, Position = 1)]
    [ValidateNotNullOrEmpty]
    public string Destination { get; set; } = string.Empty;

    /// <summary>
    /// raw, qcow2, vmdk (streamOptimized), vhdx, vpc (VHD) or vdi; default: from the destination's extension (.raw/.img,
    /// .qcow2, .vmdk, .vhdx, .vhd, .vdi), else qcow2.
    /// </summary>
    [Parameter]
    [ValidateSet("raw", "qcow2", "vmdk", "vhdx", "vpc", "vdi")]
    public string? Format { get; set; }

    /// <summary>vhdx, vpc, vdi: a fixed image rather than a dynamic one (Azure takes fixed VHDs only); still sparse on this machine.</summary>
    [Parameter]
    public SwitchParameter Fixed { get; set; }

    /// <summary>vpc: record the size itself, rounded up to whole MiB (Azure's rule), rather than a CHS geometry (qemu's force_size).</summary>
    [Parameter]
    public SwitchParameter ForceSize { get; set; }

    /// <summary>qcow2: compress clusters.</summary>
    [Parameter]
    public SwitchParameter Compress { get; set; }

    /// <summary>Codec of -Compress: zlib (default) or zstd.</summary>
    [Parameter]
    [ValidateSet("zlib", "zstd")]
    public string CompressionType { get; set; } = "zlib";

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

    /// <summary>
    /// Read the image even while a running VM writes it (qemu-img's -U): the result describes a moment of an image
    /// that may be changing, and says so in a warning.
    /// </summary>
    [Parameter]
    public SwitchParameter ForceShare { get; set; }

    protected override void ProcessRecord() => ForEachVolume(volume =>
    {
        StorageVolume source = Volumes.Locator.Get(volume);
        string destination = GetUnresolvedProviderPathFromPSPath(Destination);
        ImageFormat format = VolumeNames.FormatFor(System.IO.Path.GetFileName(destination), ConvertParameters.ParseFormat(Format), ImageFormat.Qcow2);
        if (Directory.Exists(destination))
        {
            destination = System.IO.Path.Combine(destination, System.IO.Path.GetFileNameWithoutExtension(source.Name) + VolumeTransfer.ExtensionOf(format));
        }

        using ImagePassphrase? passphrase = Passphrases.From(Passphrase);
        using ImagePassphrase? newPassphrase = Passphrases.From(NewPassphrase);
        ConvertOptions options = ConvertParameters.Build(format, Compress, CompressionType, Preallocation.Off, null, null, Permissions.DefaultVolumeMode) with
        {
            Fixed = Fixed,
            ForceSize = ForceSize,
            SourcePassphrase = passphrase,
            SourceForceShare = ForceShare,
            Encryption = Passphrases.Encryption(Encrypt, passphrase, newPassphrase, IterationTime, source.Path),
        };
        WarnIfDecrypting(source, options);
        WarnIfShared(volume);
        if (ShouldProcess(source.Path, $"Export as {format.ToQemuName()} to {destination}"))
        {
            StorageVolume exported = RunWithProgress("Export-Volume", $"Exporting {source.Name}", (progress, token) => new VolumeTransfer(KvmHost).Convert(source, destination, options, progress, token));
            WriteObject(exported);
        }
    });
}
