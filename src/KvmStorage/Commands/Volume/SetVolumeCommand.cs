using System.Management.Automation;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Access;
using KvmStorage.Core.Images;
using KvmStorage.Core.Volumes;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.Volume;

/// <summary>
/// Set-Volume: changes a qcow2 volume's backing file (<c>qemu-img rebase</c>): onto another image with the guest
/// view kept, onto a moved copy of the same image with -Unsafe, or to none ($null) to make it standalone.
/// </summary>
[Cmdlet(VerbsCommon.Set, "Volume", SupportsShouldProcess = true, DefaultParameterSetName = ByVolume)]
[OutputType(typeof(StorageVolume))]
public sealed class SetVolumeCommand : VolumeFirstCmdlet
{
    /// <summary>The new backing image: a volume object or a path; $null (or '') makes the volume standalone.</summary>
    [Parameter(Mandatory = true)]
    [AllowNull]
    [Alias("BackingPath")]
    public VolumeReference? BackingVolume { get; set; }

    /// <summary>Format of the new backing image; detected from its content when omitted, and recorded in the header.</summary>
    [Parameter]
    [ValidateSet("qcow2", "raw", "vmdk", "qcow", "vdi", "vpc", "vhdx")]
    public string? BackingFormat { get; set; }

    /// <summary>Record the backing path relative to the volume's folder instead of absolute.</summary>
    [Parameter]
    public SwitchParameter RelativeBackingPath { get; set; }

    /// <summary>Only rewrite the header, copying no data: for a backing file that was moved or renamed unchanged.</summary>
    [Parameter]
    public SwitchParameter Unsafe { get; set; }

    /// <summary>Emit the rebased volume.</summary>
    [Parameter]
    public SwitchParameter PassThru { get; set; }

    protected override void ProcessRecord() => ForEachVolume(volume =>
    {
        VolumeSpec? backing = BackingVolume is null || BackingVolume.Path.Length == 0 ? null : SpecOf(BackingVolume);
        ImageFormat? format = BackingFormat is not null && ImageFormats.TryParse(BackingFormat, out ImageFormat parsed) ? parsed : null;
        VolumeAction<StorageVolume> rebase = Volumes.Rebase(volume, backing, format, RelativeBackingPath, Unsafe);
        if (ShouldProcess(rebase.Target, rebase.Description))
        {
            StorageVolume rebased = RunWithProgress("Set-Volume", $"Rebasing {System.IO.Path.GetFileName(rebase.Target)}", rebase.Run);
            if (PassThru)
            {
                WriteObject(rebased);
            }
        }
    });
}
