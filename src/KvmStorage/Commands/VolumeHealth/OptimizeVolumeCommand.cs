using System.Management.Automation;
using KvmStorage.Core.Access;
using KvmStorage.Core.Images.Check;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.VolumeHealth;

/// <summary>Optimize-Volume: gives back the space of data that reads as zeros; -Compact rewrites the image.</summary>
[Cmdlet(VerbsCommon.Optimize, "Volume", SupportsShouldProcess = true, DefaultParameterSetName = ByVolume)]
[OutputType(typeof(ImageOptimizeResult))]
public sealed class OptimizeVolumeCommand : VolumeFirstCmdlet
{
    /// <summary>Also rewrite the image into a fresh file without holes in its layout, replacing it atomically.</summary>
    [Parameter]
    public SwitchParameter Compact { get; set; }

    protected override void ProcessRecord() => ForEachVolume(spec =>
    {
        VolumeAction<ImageOptimizeResult> optimize = Volumes.Optimize(spec, Compact);
        if (ShouldProcess(optimize.Target, optimize.Description))
        {
            WriteObject(RunWithProgress("Optimize-Volume", $"Optimizing {System.IO.Path.GetFileName(optimize.Target)}", optimize.Run));
        }
    });
}
