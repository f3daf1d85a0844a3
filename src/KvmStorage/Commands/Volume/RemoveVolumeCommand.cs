using System.Management.Automation;
using KvmStorage.Core.Access;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Volumes;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.Volume;

/// <summary>Remove-Volume: deletes an image file from its pool, refusing one that other images or VMs use.</summary>
[Cmdlet(VerbsCommon.Remove, "Volume", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High, DefaultParameterSetName = ByName)]
[OutputType(typeof(void))]
public sealed class RemoveVolumeCommand : PoolFirstCmdlet
{
    /// <summary>Remove even when another image uses this one as its backing file, or a VM has it attached.</summary>
    [Parameter]
    public SwitchParameter Force { get; set; }

    protected override void ProcessRecord() => ForEachVolume(RemoveOne);

    private void RemoveOne(VolumeSpec spec)
    {
        // Prepared first: what the real run would refuse (attached, a backing file, in use) is refused here,
        // so neither -WhatIf nor -Confirm offers a delete that cannot happen.
        VolumeAction<bool> remove = Volumes.Remove(spec, Force);
        if (ShouldProcess(remove.Target, remove.Description))
        {
            remove.Run(null, CancellationToken);
        }
    }
}
