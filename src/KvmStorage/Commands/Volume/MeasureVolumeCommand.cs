using System.Management.Automation;
using KvmStorage.Core.Access;
using KvmStorage.Core.Images;
using KvmStorage.Core.Images.Measure;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.Volume;

/// <summary>
/// Measure-Volume: the file a conversion of a volume (or a new image of a size) would need in a format, like
/// <c>qemu-img measure</c>: RequiredBytes and FullyAllocatedBytes, equal to qemu-img's for qcow2, raw and LUKS.
/// </summary>
[Cmdlet(VerbsDiagnostic.Measure, "Volume", DefaultParameterSetName = ByVolume)]
[OutputType(typeof(ImageMeasurement))]
public sealed class MeasureVolumeCommand : VolumeFirstCmdlet
{
    private const string BySize = "BySize";

    /// <summary>Measure a new, empty image of this many bytes instead of a volume (qemu-img measure --size): 8GB, or a string such as 8G.</summary>
    [Parameter(Mandatory = true, ParameterSetName = BySize)]
    [SizeTransformation]
    public ulong Size { get; set; }

    /// <summary>The output format: qcow2, raw, vhdx, vpc (VHD) or vdi. qemu-img measures qcow2 and raw (and LUKS, raw with -Encrypt); vhdx, vpc and vdi figures are the module's own writers'.</summary>
    [Parameter(Mandatory = true, Position = 1)]
    [ValidateSet("qcow2", "raw", "vhdx", "vpc", "vdi")]
    public string Format { get; set; } = "qcow2";

    /// <summary>qcow2 cluster size: a power of two from 512 bytes to 2 MiB (default 64 KiB); vhdx block size: 1 MiB to 256 MiB.</summary>
    [Parameter]
    [SizeTransformation]
    public ulong ClusterSize { get; set; }

    /// <summary>qcow2 compatibility: 1.1 (default, version 3) or 0.10 (version 2).</summary>
    [Parameter]
    [ValidateSet("1.1", "0.10")]
    public string Compat { get; set; } = "1.1";

    /// <summary>qcow2 refcount width in bits: 1, 2, 4, 8, 16 (default), 32 or 64.</summary>
    [Parameter]
    [ValidateSet("1", "2", "4", "8", "16", "32", "64")]
    public string RefcountBits { get; set; } = "16";

    /// <summary>qcow2 extended L2 entries (subclusters; clusters of 16 KiB at least).</summary>
    [Parameter]
    public SwitchParameter ExtendedL2 { get; set; }

    /// <summary>qcow2: Falloc and Full count every cluster as required; Off (default) and Metadata only the data.</summary>
    [Parameter]
    public Preallocation Preallocation { get; set; }

    /// <summary>qcow2: the new image would have a backing file (qemu's backing_file option): every cluster of the volume counts.</summary>
    [Parameter]
    public SwitchParameter Overlay { get; set; }

    /// <summary>Encrypted with LUKS (aes-256-xts): qcow2 with a LUKS header inside, or raw as a LUKS file (qemu's luks format).</summary>
    [Parameter]
    public SwitchParameter Encrypt { get; set; }

    /// <summary>vhdx, vpc, vdi: a fixed image.</summary>
    [Parameter]
    public SwitchParameter Fixed { get; set; }

    /// <summary>vpc: the size recorded itself, rounded up to whole MiB (Azure), rather than a CHS geometry.</summary>
    [Parameter]
    public SwitchParameter ForceSize { get; set; }

    /// <summary>The passphrase of an encrypted volume (LUKS); qemu-img measure needs the key to open it too.</summary>
    [Parameter]
    public System.Security.SecureString? Passphrase { get; set; }

    protected override void ProcessRecord()
    {
        if (ParameterSetName == BySize)
        {
            RunForItem(Size.ToString(System.Globalization.CultureInfo.InvariantCulture), () => MeasureOne(null));
            return;
        }

        ForEachVolume(MeasureOne);
    }

    private void MeasureOne(VolumeSpec? spec)
    {
        var options = new MeasureOptions
        {
            Format = ConvertParameters.ParseFormat(Format, ImageFormat.Qcow2),
            ClusterSize = MyInvocation.BoundParameters.ContainsKey(nameof(ClusterSize)) ? (uint)Math.Min(ClusterSize, uint.MaxValue) : null,
            Compat = Compat,
            RefcountBits = int.Parse(RefcountBits, System.Globalization.CultureInfo.InvariantCulture),
            ExtendedL2 = ExtendedL2,
            Preallocation = Preallocation,
            HasBackingFile = Overlay,
            Encrypt = Encrypt,
            Fixed = Fixed,
            ForceSize = ForceSize,
        };
        using ImagePassphrase? passphrase = Passphrases.From(Passphrase);
        VolumeAction<ImageMeasurement> measure = Volumes.Measure(spec, spec is null ? Size : null, options, passphrase);
        WriteObject(RunWithProgress("Measure-Volume", $"Measuring {System.IO.Path.GetFileName(measure.Target)}", measure.Run));
    }
}
