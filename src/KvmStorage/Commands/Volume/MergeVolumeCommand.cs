using System.Management.Automation;
using KvmStorage.Core.Access;
using KvmStorage.Core.Volumes;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.Volume;

/// <summary>
/// Merge-Volume: commits an overlay's data into its backing file (like <c>qemu-img commit</c>), then empties the
/// overlay or, with -RemoveOverlay, deletes it.
/// </summary>
[Cmdlet(VerbsData.Merge, "Volume", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium, DefaultParameterSetName = ByVolume)]
[OutputType(typeof(StorageVolume))]
public sealed class MergeVolumeCommand : VolumeFirstCmdlet
{
    /// <summary>Delete the overlay after its data is in the backing file (and, with -Base, the layers between them).</summary>
    [Parameter]
    public SwitchParameter RemoveOverlay { get; set; }

    /// <summary>An image further down the overlay's backing chain to merge into (qemu-img commit -b); every layer above it is merged.</summary>
    [Parameter]
    public VolumeReference? Base { get; set; }

    /// <summary>Merge even when other images use the base (or a layer that changes) as their backing file, or a stopped VM uses it.</summary>
    [Parameter]
    public SwitchParameter Force { get; set; }

    /// <summary>Emit the base volume after the merge.</summary>
    [Parameter]
    public SwitchParameter PassThru { get; set; }

    protected override void ProcessRecord() => ForEachVolume(overlay =>
    {
        VolumeAction<StorageVolume> merge = Volumes.Merge(overlay, Base is null ? null : SpecOf(Base), RemoveOverlay, Force);
        if (ShouldProcess(merge.Target, merge.Description))
        {
            StorageVolume merged = RunWithProgress("Merge-Volume", $"Merging {System.IO.Path.GetFileName(merge.Target)}", merge.Run);
            if (PassThru)
            {
                WriteObject(merged);
            }
        }
    });
}
